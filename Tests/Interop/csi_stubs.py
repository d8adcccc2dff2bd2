"""Generates Python stubs for proto/csi.proto with grpcio-tools into a cache
directory and puts them on sys.path, so checks use an implementation of the
CSI protocol that is not ours."""
import os
import sys
import tempfile

from grpc_tools import protoc
import grpc_tools

HERE = os.path.dirname(os.path.abspath(__file__))
PROTO_DIR = os.path.join(HERE, "..", "..", "proto")


def load():
    out = os.path.join(tempfile.gettempdir(), "hearth-csi-py")
    os.makedirs(out, exist_ok=True)
    well_known = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    rc = protoc.main(["protoc", f"-I{PROTO_DIR}", f"-I{well_known}", f"--python_out={out}",
                      f"--grpc_python_out={out}", os.path.join(PROTO_DIR, "csi.proto")])
    if rc != 0:
        raise SystemExit(f"protoc failed ({rc})")
    sys.path.insert(0, out)
    import csi_pb2, csi_pb2_grpc  # noqa: E401
    return csi_pb2, csi_pb2_grpc
