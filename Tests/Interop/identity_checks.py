#!/usr/bin/env python3
"""CSI Identity through grpcio's generated stubs. usage: identity_checks.py TARGET"""
import sys

import grpc

import csi_stubs

csi, rpc = csi_stubs.load()
with grpc.insecure_channel(sys.argv[1]) as ch:
    stub = rpc.IdentityStub(ch)
    info = stub.GetPluginInfo(csi.GetPluginInfoRequest(), timeout=10)
    assert info.name == "hearth.csi.dev", info
    assert info.vendor_version, info
    caps = stub.GetPluginCapabilities(csi.GetPluginCapabilitiesRequest(), timeout=10)
    kinds = {c.service.type for c in caps.capabilities if c.HasField("service")}
    assert csi.PluginCapability.Service.CONTROLLER_SERVICE in kinds, caps
    probe = stub.Probe(csi.ProbeRequest(), timeout=10)
    assert probe.HasField("ready") and probe.ready.value, probe
    print("ok identity", info.name, info.vendor_version)
