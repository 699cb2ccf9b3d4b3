"""Names shared by every pfd model directory, whatever its backend."""

#: The file in every model directory that says what the model is (its ``backend``, the
#: model file, provenance). The store's model upload writes it last, as the completion
#: marker.
MODEL_JSON = "pfd_model.json"
