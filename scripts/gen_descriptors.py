"""Write a FileDescriptorSet of the TF Serving, TensorFlow and KServe V2 protos that
tfgate compiles.

The descriptors come from the official PyPI packages (tensorflow-serving-api and
tensorflow-cpu, and tritonclient for V2) installed in the project's venv, so no .proto
file is vendored. tritonclient's generated modules are read, not imported: each passes
its file's serialized FileDescriptorProto to AddSerializedFile, and that bytes literal is
taken out with ast.literal_eval.
Usage: python gen_descriptors.py OUT_FILE
"""
import ast
import importlib
import importlib.util
import os
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


V2_MODULES = ["model_config_pb2.py", "service_pb2.py"]


def v2_descriptors():
    """The FileDescriptorProtos serialized inside tritonclient's grpc/*_pb2.py."""
    spec = importlib.util.find_spec("tritonclient")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("tritonclient is not installed: run scripts/setup.sh")
    grpc_dir = os.path.join(list(spec.submodule_search_locations)[0], "grpc")
    for module in V2_MODULES:
        with open(os.path.join(grpc_dir, module), encoding="utf-8") as f:
            tree = ast.parse(f.read())
        found = [
            node.args[0]
            for node in ast.walk(tree)
            if isinstance(node, ast.Call)
            and getattr(node.func, "attr", "") == "AddSerializedFile"
        ]
        if len(found) != 1:
            sys.exit(f"{module}: expected one AddSerializedFile call, found {len(found)}")
        yield descriptor_pb2.FileDescriptorProto.FromString(ast.literal_eval(found[0]))


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
    # KServe V2 (package `inference`), dependencies first.
    for proto in v2_descriptors():
        if proto.name not in seen:
            seen.add(proto.name)
            fds.file.append(proto)
    with open(out, "wb") as f:
        f.write(fds.SerializeToString())
    print(f"wrote {len(fds.file)} proto files to {out}")


if __name__ == "__main__":
    main()
