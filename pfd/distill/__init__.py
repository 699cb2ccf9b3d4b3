"""Distillation: the teacher's data, the student's rounds, and the student's DFT audit."""
