#!/usr/bin/env python3
"""CSI Controller through grpcio's generated stubs, as the sidecars call it.
usage: controller_checks.py TARGET NODE_ID"""
import sys

import grpc

import csi_stubs

csi, rpc = csi_stubs.load()
target, node = sys.argv[1], sys.argv[2]


def cap(mode):
    return csi.VolumeCapability(mount=csi.VolumeCapability.MountVolume(),
                                access_mode=csi.VolumeCapability.AccessMode(mode=mode))


with grpc.insecure_channel(target) as ch:
    ctl = rpc.ControllerStub(ch)
    kinds = {c.rpc.type for c in ctl.ControllerGetCapabilities(csi.ControllerGetCapabilitiesRequest(), timeout=10).capabilities}
    for wanted in ("CREATE_DELETE_VOLUME", "PUBLISH_UNPUBLISH_VOLUME", "LIST_VOLUMES", "GET_CAPACITY",
                   "CREATE_DELETE_SNAPSHOT", "LIST_SNAPSHOTS", "CLONE_VOLUME", "EXPAND_VOLUME",
                   "LIST_VOLUMES_PUBLISHED_NODES", "VOLUME_CONDITION", "GET_VOLUME", "MODIFY_VOLUME"):
        assert csi.ControllerServiceCapability.RPC.Type.Value(wanted) in kinds, wanted
    mode = csi.VolumeCapability.AccessMode.SINGLE_NODE_WRITER
    vol = ctl.CreateVolume(csi.CreateVolumeRequest(
        name="py-vol", capacity_range=csi.CapacityRange(required_bytes=10 << 20),
        volume_capabilities=[cap(mode)], parameters={"cachePolicy": "keep"}), timeout=10).volume
    assert vol.capacity_bytes == 10 << 20 and vol.volume_id, vol
    try:
        ctl.CreateVolume(csi.CreateVolumeRequest(name="py-mnmw", volume_capabilities=[
            cap(csi.VolumeCapability.AccessMode.MULTI_NODE_MULTI_WRITER)]), timeout=10)
        raise AssertionError("MULTI_NODE_MULTI_WRITER accepted")
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.INVALID_ARGUMENT, e
    pub = ctl.ControllerPublishVolume(csi.ControllerPublishVolumeRequest(
        volume_id=vol.volume_id, node_id=node, volume_capability=cap(mode)), timeout=10)
    assert pub.publish_context["hearth.csi.dev/access"] == "rw", pub
    listed = ctl.ListVolumes(csi.ListVolumesRequest(), timeout=10)
    entry = [e for e in listed.entries if e.volume.volume_id == vol.volume_id][0]
    assert list(entry.status.published_node_ids) == [node], entry
    ctl.ControllerUnpublishVolume(csi.ControllerUnpublishVolumeRequest(volume_id=vol.volume_id, node_id=node), timeout=10)
    snap = ctl.CreateSnapshot(csi.CreateSnapshotRequest(source_volume_id=vol.volume_id, name="py-snap"), timeout=10).snapshot
    assert snap.ready_to_use and snap.source_volume_id == vol.volume_id, snap
    ctl.DeleteSnapshot(csi.DeleteSnapshotRequest(snapshot_id=snap.snapshot_id), timeout=10)
    ctl.DeleteVolume(csi.DeleteVolumeRequest(volume_id=vol.volume_id), timeout=10)
    try:
        ctl.ControllerGetVolume(csi.ControllerGetVolumeRequest(volume_id=vol.volume_id), timeout=10)
        raise AssertionError("deleted volume still found")
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.NOT_FOUND, e
    print("ok controller", vol.volume_id)
