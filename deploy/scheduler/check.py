#!/usr/bin/env python3
"""Offline check of deploy/scheduler: every manifest parses, has apiVersion/kind,
and the embedded KubeSchedulerConfiguration has the shape kube-scheduler v1 accepts
for a Hearth extender (field names as in k8s.io/kube-scheduler/config/v1 Extender).
No cluster needed; run: python3 deploy/scheduler/check.py"""
import os
import re
import sys

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
EXTENDER_FIELDS = {"urlPrefix", "filterVerb", "preemptVerb", "prioritizeVerb", "weight", "bindVerb",
                   "enableHTTPS", "tlsConfig", "httpTimeout", "nodeCacheCapable", "managedResources", "ignorable"}
TOP_FIELDS = {"apiVersion", "kind", "parallelism", "leaderElection", "clientConnection", "healthzBindAddress",
              "metricsBindAddress", "enableProfiling", "enableContentionProfiling", "percentageOfNodesToScore",
              "podInitialBackoffSeconds", "podMaxBackoffSeconds", "profiles", "extenders", "delayCacheUntilActive"}


def fail(message):
    print("FAIL:", message)
    sys.exit(1)


def check_scheduler_config(text):
    config = yaml.safe_load(text)
    if config.get("apiVersion") != "kubescheduler.config.k8s.io/v1" or config.get("kind") != "KubeSchedulerConfiguration":
        fail("config.yaml must be a kubescheduler.config.k8s.io/v1 KubeSchedulerConfiguration")
    unknown = set(config) - TOP_FIELDS
    if unknown:
        fail(f"unknown KubeSchedulerConfiguration fields {unknown} (kube-scheduler decodes strictly)")
    names = [p.get("schedulerName") for p in config.get("profiles", [])]
    if names != ["hearth-scheduler"]:
        fail(f"expected one profile named hearth-scheduler, got {names}")
    extenders = config.get("extenders") or []
    if len(extenders) != 1:
        fail("expected exactly one extender")
    ext = extenders[0]
    unknown = set(ext) - EXTENDER_FIELDS
    if unknown:
        fail(f"unknown extender fields {unknown}")
    expected = {"urlPrefix": "http://127.0.0.1:8888", "filterVerb": "filter", "prioritizeVerb": "prioritize",
                "nodeCacheCapable": True, "ignorable": True}
    for key, value in expected.items():
        if ext.get(key) != value:
            fail(f"extender {key} = {ext.get(key)!r}, want {value!r}")
    if not isinstance(ext.get("weight"), int) or not 1 <= ext["weight"] <= 100:
        fail("extender weight must be an integer in 1...100")
    if not re.fullmatch(r"\d+(ms|s|m)", str(ext.get("httpTimeout", ""))):
        fail("httpTimeout must be a Go duration such as 5s")
    election = config.get("leaderElection", {})
    if election.get("resourceName") != "hearth-scheduler":
        fail("leader election must use its own lease (resourceName: hearth-scheduler), not the default scheduler's")
    return config


def main():
    kinds = []
    config = None
    for name in sorted(os.listdir(HERE)):
        if not name.endswith(".yaml"):
            continue
        with open(os.path.join(HERE, name)) as f:
            for doc in yaml.safe_load_all(f):
                if doc is None:
                    continue
                if "apiVersion" not in doc or "kind" not in doc:
                    fail(f"{name}: a document without apiVersion/kind")
                kinds.append((name, doc["kind"], doc.get("metadata", {}).get("name")))
                if doc["kind"] == "ConfigMap" and doc["metadata"]["name"] == "hearth-scheduler-config":
                    config = check_scheduler_config(doc["data"]["config.yaml"])
                if doc["kind"] == "Deployment":
                    containers = {c["name"]: c for c in doc["spec"]["template"]["spec"]["containers"]}
                    if set(containers) != {"kube-scheduler", "extender"}:
                        fail("the Deployment runs kube-scheduler and the extender side by side")
                    if "--config=/etc/kubernetes/hearth-scheduler/config.yaml" not in containers["kube-scheduler"]["command"]:
                        fail("kube-scheduler must read the mounted config")
                    if containers["extender"]["args"][0] != "scheduler":
                        fail("the extender container runs `hearth scheduler`")
    if config is None:
        fail("no hearth-scheduler-config ConfigMap")
    for name, kind, object_name in kinds:
        print(f"ok  {name:22} {kind:20} {object_name}")
    print("ok  KubeSchedulerConfiguration: profile hearth-scheduler, extender",
          config["extenders"][0]["urlPrefix"], "weight", config["extenders"][0]["weight"])


if __name__ == "__main__":
    main()
