"""A TF Serving-API model server: runs tensorflow_model_server when installed, else serves the
same gRPC and REST APIs itself from the same model repo layout (see ``server``)."""
