"""Write a FileDescriptorSet of the TF Serving and TensorFlow protos that tfgate compiles.

The descriptors come from the official PyPI packages (tensorflow-serving-api and
tensorflow-cpu) installed in the project's venv, so no .proto file is vendored.
Usage: python gen_descriptors.py OUT_FILE
"""
import importlib
import sys

from google.protobuf import descriptor_pb2

# Roots; every file they import is included (dependencies first).
MODULES = [
    "tensorflow_serving.apis.prediction_service_pb2",
    "tensorflow_serving.apis.model_service_pb2",
    "tensorflow_serving.config.model_server_config_pb2",
    "tensorflow_serving.apis.prediction_log_pb2",
    "tensorflow.core.protobuf.config_pb2",
    "tensorflow.core.protobuf.saved_model_pb2",
    "tensorflow.core.protobuf.meta_graph_pb2",
    "tensorflow.core.example.example_pb2",
]


def main() -> None:
    out = sys.argv[1]
    fds = descriptor_pb2.FileDescriptorSet()
    seen = set()

    def add(fd):
        if fd.name in seen:
            return
        seen.add(fd.name)
        for dep in fd.dependencies:
            add(dep)
        proto = descriptor_pb2.FileDescriptorProto()
        fd.CopyToProto(proto)
        fds.file.append(proto)

    for name in MODULES:
        add(importlib.import_module(name).DESCRIPTOR)
    with open(out, "wb") as f:
        f.write(fds.SerializeToString())
    print(f"wrote {len(fds.file)} proto files to {out}")


if __name__ == "__main__":
    main()
