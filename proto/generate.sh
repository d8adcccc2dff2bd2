#!/usr/bin/env bash
# Regenerate Sources/CSIProto/csi.pb.swift from proto/csi.proto.
#
# Needs:
#   protoc           Debian's protobuf-compiler (/usr/bin/protoc); the
#                    well-known types come from libprotobuf-dev in /usr/include.
#   protoc-gen-swift from apple/swift-protobuf at the tag Package.swift uses
#                    (1.39.0). Build it once:
#                      git clone --branch 1.39.0 https://github.com/apple/swift-protobuf
#                      cd swift-protobuf && swift build --product protoc-gen-swift
#                    then point PROTOC_GEN_SWIFT at .build/debug/protoc-gen-swift
#                    or put it on PATH.
#
# Usage: proto/generate.sh   (from any directory)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

protoc="${PROTOC:-/usr/bin/protoc}"
if [[ ! -x "$protoc" ]]; then
    protoc="$(command -v protoc || true)"
fi
if [[ -z "$protoc" || ! -x "$protoc" ]]; then
    echo "generate.sh: protoc not found (apt-get install protobuf-compiler libprotobuf-dev)" >&2
    exit 1
fi

plugin="${PROTOC_GEN_SWIFT:-$(command -v protoc-gen-swift || true)}"
if [[ -z "$plugin" || ! -x "$plugin" ]]; then
    cat >&2 <<'MSG'
generate.sh: protoc-gen-swift not found.
Build it inside a checkout of apple/swift-protobuf at tag 1.39.0:
    swift build --product protoc-gen-swift
and set PROTOC_GEN_SWIFT=/path/to/swift-protobuf/.build/debug/protoc-gen-swift
(or put protoc-gen-swift on PATH).
MSG
    exit 1
fi

if [[ ! -f /usr/include/google/protobuf/descriptor.proto ]]; then
    echo "generate.sh: /usr/include/google/protobuf/*.proto missing (apt-get install libprotobuf-dev)" >&2
    exit 1
fi

out="Sources/CSIProto"
mkdir -p "$out"

"$protoc" \
    --plugin=protoc-gen-swift="$plugin" \
    --swift_out="$out" \
    --swift_opt=Visibility=Public \
    -I /usr/include \
    -I proto \
    proto/csi.proto

echo "generated $out/csi.pb.swift"
