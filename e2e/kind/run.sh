#!/usr/bin/env bash
# Hearth on a real Kubernetes cluster: KinD (1 control plane + 3 workers), the image
# built from this checkout, the external-snapshotter CRDs and snapshot-controller,
# Hearth's s3 overlay against an in-cluster moto S3 server, then
#   (a) csi-sanity inside the cluster, against a worker's node plugin socket,
#   (b) the Kubernetes external-storage e2e suite (e2e.test + test-driver.yaml),
#   (c) a locality test: a pod writes a volume on one node; a second pod on the same
#       claim, scheduled by hearth-scheduler, must land on that node,
#   (d) a node plugin upgrade: a pod writes and verifies files in a loop while the
#       hearth-node DaemonSet is rolled (maxSurge: the new pod takes the volumes
#       over); not one of the pod's writes or reads may fail.
# Needs: docker (with an engine), kind, kubectl, go (for csi-sanity), curl, tar.
#   e2e/kind/run.sh                 # everything, cluster deleted at the end
#   KEEP_CLUSTER=1 e2e/kind/run.sh  # leave the cluster up for debugging
#   STEPS="sanity locality" e2e/kind/run.sh   # a subset of: sanity e2e locality upgrade
#   E2E_FOCUS='External.Storage.*hearth.csi.dev.*provisioning' e2e/kind/run.sh
# Results (logs, JUnit XML) land in $OUT_DIR (default .build/kind-e2e).
set -euo pipefail

# ---- pinned versions -------------------------------------------------------------
KIND_VERSION="v0.27.0"                       # the kind CLI this was written for
K8S_VERSION="v1.32.2"                        # = KIND_NODE_IMAGE's Kubernetes
KIND_NODE_IMAGE="kindest/node:${K8S_VERSION}"
SNAPSHOTTER_VERSION="v8.2.1"                 # CRDs + snapshot-controller (groupsnapshot v1beta1)
CSI_TEST_VERSION="v5.3.1"                    # csi-sanity
HEARTH_IMAGE="hearth:e2e"                    # = e2e/kind/kustomization.yaml images
# -----------------------------------------------------------------------------------

repo=$(cd "$(dirname "$0")/../.." && pwd)
here="$repo/e2e/kind"
CLUSTER_NAME="${CLUSTER_NAME:-hearth-e2e}"
OUT_DIR="${OUT_DIR:-$repo/.build/kind-e2e}"
STEPS="${STEPS:-sanity e2e locality upgrade}"
E2E_FOCUS="${E2E_FOCUS:-External.Storage.*hearth.csi.dev}"
E2E_SKIP="${E2E_SKIP:-\[Disruptive\]|\[Serial\]}"
KEEP_CLUSTER="${KEEP_CLUSTER:-0}"
work=$(mktemp -d "${TMPDIR:-/tmp}/hearth-kind.XXXXXX")
kubeconfig="$work/kubeconfig"
export KUBECONFIG="$kubeconfig"
snapshotter_url="https://raw.githubusercontent.com/kubernetes-csi/external-snapshotter/${SNAPSHOTTER_VERSION}"

log() { echo "== $* ($(date +%H:%M:%S))" >&2; }
die() { echo "FAIL: $*" >&2; exit 1; }
want() { [[ " $STEPS " == *" $1 "* ]]; }

# shellcheck disable=SC2317  # reached through the EXIT trap
cleanup() {
    local status=$?
    if [[ -s "$kubeconfig" ]]; then
        mkdir -p "$OUT_DIR/logs"
        kubectl -n kube-system logs -l app.kubernetes.io/part-of=hearth --all-containers --prefix \
            --tail=-1 >"$OUT_DIR/logs/hearth.log" 2>&1 || true
        kubectl get pods -A -o wide >"$OUT_DIR/logs/pods.txt" 2>&1 || true
        kubectl get events -A --sort-by=.lastTimestamp >"$OUT_DIR/logs/events.txt" 2>&1 || true
    fi
    if [[ "$KEEP_CLUSTER" == 1 ]]; then
        echo "cluster kept: kind export kubeconfig --name $CLUSTER_NAME" >&2
    else
        kind delete cluster --name "$CLUSTER_NAME" >/dev/null 2>&1 || true
    fi
    rm -rf "$work"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

for tool in docker kind kubectl curl tar; do
    command -v "$tool" >/dev/null || die "$tool is not on PATH"
done
docker info >/dev/null 2>&1 || die "docker has no engine to talk to"
kind_version=$(kind version | awk '{print $2}')
[[ "$kind_version" == "$KIND_VERSION" ]] || echo "note: kind $kind_version, written for $KIND_VERSION" >&2
mkdir -p "$OUT_DIR"

# ---- cluster -----------------------------------------------------------------------
log "creating KinD cluster $CLUSTER_NAME ($KIND_NODE_IMAGE, 1 control plane + 3 workers)"
kind delete cluster --name "$CLUSTER_NAME" >/dev/null 2>&1 || true
kind create cluster --name "$CLUSTER_NAME" --image "$KIND_NODE_IMAGE" \
    --config "$here/cluster.yaml" --kubeconfig "$kubeconfig" --wait 120s
mapfile -t workers < <(kubectl get nodes -l '!node-role.kubernetes.io/control-plane' \
    -o jsonpath='{range .items[*]}{.metadata.name}{"\n"}{end}' | sort)
[[ ${#workers[@]} -eq 3 ]] || die "expected 3 workers, got ${#workers[@]}"

log "building $HEARTH_IMAGE from deploy/Dockerfile"
docker build -f "$repo/deploy/Dockerfile" -t "$HEARTH_IMAGE" "$repo"
kind load docker-image "$HEARTH_IMAGE" --name "$CLUSTER_NAME"

# ---- snapshots ---------------------------------------------------------------------
log "external-snapshotter $SNAPSHOTTER_VERSION: CRDs and snapshot-controller"
for crd in snapshot.storage.k8s.io_volumesnapshotclasses \
           snapshot.storage.k8s.io_volumesnapshotcontents \
           snapshot.storage.k8s.io_volumesnapshots \
           groupsnapshot.storage.k8s.io_volumegroupsnapshotclasses \
           groupsnapshot.storage.k8s.io_volumegroupsnapshotcontents \
           groupsnapshot.storage.k8s.io_volumegroupsnapshots; do
    kubectl apply -f "$snapshotter_url/client/config/crd/$crd.yaml"
done
kubectl apply -f "$snapshotter_url/deploy/kubernetes/snapshot-controller/rbac-snapshot-controller.yaml"
kubectl apply -f "$snapshotter_url/deploy/kubernetes/snapshot-controller/setup-snapshot-controller.yaml"
# Group snapshots are behind the same feature gate as in csi-snapshotter.
kubectl -n kube-system patch deployment snapshot-controller --type=json \
    -p '[{"op":"add","path":"/spec/template/spec/containers/0/args/-","value":"--feature-gates=CSIVolumeGroupSnapshot=true"}]'
kubectl -n kube-system rollout status deployment/snapshot-controller --timeout=180s

# ---- Hearth + S3 -------------------------------------------------------------------
log "deploying moto S3 and Hearth (e2e/kind/kustomization.yaml = s3 overlay + moto)"
kubectl apply -k "$here"
# A random inventory token instead of deploy/scheduler's placeholder.
kubectl -n kube-system create secret generic hearth-inventory-token \
    --from-literal=token="$(head -c 32 /dev/urandom | base64)" --dry-run=client -o yaml | kubectl apply -f -
kubectl -n hearth-e2e-s3 rollout status deployment/s3 --timeout=300s
# moto accepts an unsigned PUT: create the bucket from inside its own pod.
kubectl -n hearth-e2e-s3 exec deploy/s3 -- python -c \
    "import urllib.request as u; u.urlopen(u.Request('http://127.0.0.1:5000/hearth', method='PUT'))"
# Pods that started before the bucket existed may have failed once; restart them.
kubectl -n kube-system rollout restart deployment/hearth-controller deployment/hearth-scheduler daemonset/hearth-node
kubectl -n kube-system rollout status deployment/hearth-controller --timeout=300s
kubectl -n kube-system rollout status daemonset/hearth-node --timeout=300s
kubectl -n kube-system rollout status deployment/hearth-scheduler --timeout=300s
kubectl apply -f "$repo/deploy/examples/storageclass.yaml" \
              -f "$repo/deploy/examples/snapshotclass.yaml" \
              -f "$repo/deploy/examples/groupsnapshotclass.yaml"
# Every worker registered with kubelet (CSINode lists the driver).
for node in "${workers[@]}"; do
    for _ in $(seq 60); do
        kubectl get csinode "$node" -o jsonpath='{.spec.drivers[*].name}' 2>/dev/null | grep -qw hearth.csi.dev && break
        sleep 2
    done
    kubectl get csinode "$node" -o jsonpath='{.spec.drivers[*].name}' | grep -qw hearth.csi.dev \
        || die "hearth.csi.dev not registered on $node"
done

# ---- (a) csi-sanity ----------------------------------------------------------------
# csi-sanity runs in a pod on the first worker, next to that worker's node plugin:
#   --csi.endpoint            the node plugin's socket (hostPath
#                             /var/lib/kubelet/plugins/hearth.csi.dev/csi.sock)
#   --csi.controllerendpoint  a `hearth controller` started inside the same pod on the
#                             same store (the Deployment's socket lives in its emptyDir)
# Staging and target directories are under /var/lib/kubelet (the node plugin's
# --allowed-path), shared through a hostPath so both pods see the same paths.
run_sanity() {
    command -v go >/dev/null || die "need Go to build csi-sanity"
    log "(a) csi-sanity $CSI_TEST_VERSION against ${workers[0]}"
    mkdir -p "$work/bin"
    GOBIN="$work/bin" CGO_ENABLED=0 GOFLAGS="" go install \
        "github.com/kubernetes-csi/csi-test/v5/cmd/csi-sanity@$CSI_TEST_VERSION"
    kubectl apply -f - <<YAML
apiVersion: v1
kind: Pod
metadata:
  name: csi-sanity
  namespace: kube-system
spec:
  nodeName: ${workers[0]}
  restartPolicy: Never
  serviceAccountName: hearth-controller
  containers:
    - name: sanity
      image: $HEARTH_IMAGE
      command: ["sleep", "infinity"]
      env:
        - name: AWS_ACCESS_KEY_ID
          valueFrom: { secretKeyRef: { name: hearth-s3-credentials, key: access-key-id } }
        - name: AWS_SECRET_ACCESS_KEY
          valueFrom: { secretKeyRef: { name: hearth-s3-credentials, key: secret-access-key } }
      securityContext: { privileged: true }
      volumeMounts:
        - { name: plugin-dir, mountPath: /node }
        - { name: kubelet-dir, mountPath: /var/lib/kubelet, mountPropagation: Bidirectional }
  volumes:
    - name: plugin-dir
      hostPath: { path: /var/lib/kubelet/plugins/hearth.csi.dev, type: Directory }
    - name: kubelet-dir
      hostPath: { path: /var/lib/kubelet, type: Directory }
YAML
    kubectl -n kube-system wait --for=condition=Ready pod/csi-sanity --timeout=300s
    kubectl cp "$work/bin/csi-sanity" kube-system/csi-sanity:/usr/local/bin/csi-sanity
    local store endpoint region status=0
    store=$(kubectl -n kube-system get configmap hearth-config -o jsonpath='{.data.store}')
    endpoint=$(kubectl -n kube-system get configmap hearth-config -o jsonpath='{.data.s3-endpoint}')
    region=$(kubectl -n kube-system get configmap hearth-config -o jsonpath='{.data.s3-region}')
    kubectl -n kube-system exec csi-sanity -- sh -c \
        "chmod +x /usr/local/bin/csi-sanity && mkdir -p /var/lib/kubelet/hearth-sanity &&
         printf 'commitInterval: 10s\\n' >/tmp/mutable-parameters.yaml &&
         setsid hearth controller --endpoint unix:///tmp/controller.sock --store '$store' \
            --s3-endpoint '$endpoint' --s3-region '$region' --s3-path-style \
            </dev/null >/tmp/controller.log 2>&1 &
         for i in \$(seq 100); do [ -S /tmp/controller.sock ] && exit 0; sleep 0.1; done;
         cat /tmp/controller.log; exit 1"
    kubectl -n kube-system exec csi-sanity -- csi-sanity \
        --csi.endpoint=/node/csi.sock \
        --csi.controllerendpoint=/tmp/controller.sock \
        --csi.stagingdir=/var/lib/kubelet/hearth-sanity/staging \
        --csi.mountdir=/var/lib/kubelet/hearth-sanity/target \
        --csi.testvolumesize=$((1024 * 1024 * 1024)) \
        --csi.testvolumeexpandsize=$((2 * 1024 * 1024 * 1024)) \
        --csi.testvolumemutableparameters=/tmp/mutable-parameters.yaml \
        --csi.testnodevolumeattachlimit \
        --ginkgo.junit-report=/tmp/csi-sanity.xml \
        --ginkgo.v || status=$?
    kubectl cp kube-system/csi-sanity:/tmp/csi-sanity.xml "$OUT_DIR/csi-sanity.xml" >/dev/null 2>&1 || true
    kubectl -n kube-system exec csi-sanity -- cat /tmp/controller.log >"$OUT_DIR/csi-sanity-controller.log" 2>&1 || true
    kubectl -n kube-system delete pod csi-sanity --wait=false
    [[ $status -eq 0 ]] || die "csi-sanity failed (exit $status)"
}

# ---- (b) external-storage e2e -----------------------------------------------------
run_e2e() {
    local version
    version=$(kubectl get --raw /version | sed -n 's/.*"gitVersion": *"\([^"]*\)".*/\1/p')
    [[ -n "$version" ]] || die "cannot read the server's version"
    log "(b) Kubernetes $version external-storage e2e, focus $E2E_FOCUS"
    curl -fsSL "https://dl.k8s.io/release/$version/kubernetes-test-linux-amd64.tar.gz" \
        | tar -xz -C "$work" kubernetes/test/bin/e2e.test kubernetes/test/bin/ginkgo
    mkdir -p "$OUT_DIR/e2e"
    # Parallel like upstream's CSI jobs; [Serial]/[Disruptive] tests are skipped.
    "$work/kubernetes/test/bin/ginkgo" -p --procs=4 --timeout=3h \
        "--focus=$E2E_FOCUS" "--skip=$E2E_SKIP" \
        --junit-report=junit.xml --output-dir="$OUT_DIR/e2e" \
        "$work/kubernetes/test/bin/e2e.test" -- \
        -kubeconfig="$kubeconfig" \
        -storage.testdriver="$here/test-driver.yaml" \
        -report-dir="$OUT_DIR/e2e" \
        || die "external-storage e2e failed (see $OUT_DIR/e2e)"
}

# The 1 GiB claim "data" on the hearth StorageClass, and the YAML separator after it.
data_claim() {
    cat <<'YAML'
apiVersion: v1
kind: PersistentVolumeClaim
metadata: { name: data }
spec:
  storageClassName: hearth
  accessModes: ["ReadWriteOnce"]
  resources: { requests: { storage: 1Gi } }
---
YAML
}

# ---- (c) locality ------------------------------------------------------------------
# Pod 1 (default scheduler) is pinned to the last worker and writes 64 MiB; it is
# deleted; pod 2 asks hearth-scheduler for the same claim with no constraint of its
# own and must land on that worker, where the bytes are cached (cachePolicy: keep).
run_locality() {
    local ns=hearth-locality target node sum1 sum2
    target="${workers[2]}"
    log "(c) locality: writer on $target, then a reader via hearth-scheduler"
    kubectl create namespace "$ns" --dry-run=client -o yaml | kubectl apply -f -
    { data_claim; cat; } <<YAML | kubectl -n "$ns" apply -f -
apiVersion: v1
kind: Pod
metadata: { name: writer }
spec:
  nodeSelector: { kubernetes.io/hostname: $target }
  restartPolicy: Never
  containers:
    - name: w
      image: busybox:1.36
      command: ["sh", "-c", "dd if=/dev/urandom of=/data/blob bs=1M count=64 && sync && md5sum /data/blob | cut -d' ' -f1 > /data/blob.md5 && sync && cat /data/blob.md5"]
      volumeMounts: [{ name: data, mountPath: /data }]
  volumes:
    - name: data
      persistentVolumeClaim: { claimName: data }
YAML
    kubectl -n "$ns" wait --for=jsonpath='{.status.phase}'=Succeeded pod/writer --timeout=300s
    sum1=$(kubectl -n "$ns" logs writer | tail -n1)
    kubectl -n "$ns" delete pod writer --wait=true
    # The VolumeAttachment goes away (the writer's lease ends). hearth-node reports to
    # hearth-scheduler within a second of the unstage and every 30 s (--inventory-url,
    # deploy/base/node.yaml): the volume stays in its report while its bytes are cached.
    for _ in $(seq 60); do
        [[ -z "$(kubectl get volumeattachments -o jsonpath='{.items[?(@.spec.nodeName=="'"$target"'")].metadata.name}')" ]] && break
        sleep 2
    done
    sleep "${INVENTORY_WAIT:-45}"
    kubectl -n "$ns" apply -f - <<YAML
apiVersion: v1
kind: Pod
metadata: { name: reader }
spec:
  schedulerName: hearth-scheduler
  restartPolicy: Never
  containers:
    - name: r
      image: busybox:1.36
      command: ["sh", "-c", "md5sum /data/blob | cut -d' ' -f1"]
      volumeMounts: [{ name: data, mountPath: /data }]
  volumes:
    - name: data
      persistentVolumeClaim: { claimName: data }
YAML
    kubectl -n "$ns" wait --for=jsonpath='{.status.phase}'=Succeeded pod/reader --timeout=300s
    node=$(kubectl -n "$ns" get pod reader -o jsonpath='{.spec.nodeName}')
    sum2=$(kubectl -n "$ns" logs reader | tail -n1)
    kubectl -n "$ns" get pod reader -o wide
    [[ "$sum1" == "$sum2" ]] || die "locality: reader saw checksum $sum2, writer wrote $sum1"
    [[ "$node" == "$target" ]] || die "locality: hearth-scheduler put the reader on $node, the data is cached on $target"
    echo "ok  locality: reader scheduled on $node, where the writer left its data" >&2
    kubectl delete namespace "$ns" --wait=false
}

# ---- (d) node plugin upgrade -------------------------------------------------------
# A pod on the first worker writes, fsyncs and reads back 1 MiB files in a loop
# (set -e: any failed syscall fails the pod) while the hearth-node DaemonSet rolls,
# until told to stop.
# The new node plugin takes the volume over from the old one (docs/takeover.md,
# section 4); the pod must end Succeeded, and the volume's node plugin must be new.
run_upgrade() {
    local ns=hearth-upgrade target before after
    target="${workers[0]}"
    log "(d) upgrade: I/O on $target while hearth-node rolls"
    kubectl create namespace "$ns" --dry-run=client -o yaml | kubectl apply -f -
    { data_claim; cat; } <<YAML | kubectl -n "$ns" apply -f -
apiVersion: v1
kind: Pod
metadata: { name: busy }
spec:
  nodeSelector: { kubernetes.io/hostname: $target }
  restartPolicy: Never
  containers:
    - name: io
      image: busybox:1.36
      command:
        - sh
        - -ec
        - |
          end=\$((\$(date +%s) + 900)); i=0
          while [ ! -e /data/stop ] && [ \$(date +%s) -lt \$end ]; do
            i=\$((i + 1))
            dd if=/dev/urandom of=/data/f\$((i % 16)) bs=1M count=1 conv=fsync 2>/dev/null
            sum=\$(md5sum /data/f\$((i % 16)) | cut -d' ' -f1)
            cp /data/f\$((i % 16)) /data/copy && sync
            [ "\$(md5sum /data/copy | cut -d' ' -f1)" = "\$sum" ]
          done
          echo "rounds: \$i"
      volumeMounts: [{ name: data, mountPath: /data }]
  volumes:
    - name: data
      persistentVolumeClaim: { claimName: data }
YAML
    kubectl -n "$ns" wait --for=condition=Ready pod/busy --timeout=300s
    before=$(kubectl -n kube-system get pods -l app.kubernetes.io/name=hearth-node \
        --field-selector spec.nodeName="$target" -o jsonpath='{.items[0].metadata.name}')
    kubectl -n kube-system rollout restart daemonset/hearth-node
    kubectl -n kube-system rollout status daemonset/hearth-node --timeout=600s
    after=$(kubectl -n kube-system get pods -l app.kubernetes.io/name=hearth-node \
        --field-selector spec.nodeName="$target" -o jsonpath='{.items[0].metadata.name}')
    [[ "$before" != "$after" ]] || die "upgrade: hearth-node on $target was not replaced"
    kubectl -n "$ns" exec busy -- touch /data/stop
    kubectl -n kube-system logs "$after" -c hearth | grep -q "took over" \
        || die "upgrade: the new node plugin did not take the volume over (see its log)"
    kubectl -n "$ns" wait --for=jsonpath='{.status.phase}'=Succeeded pod/busy --timeout=300s \
        || die "upgrade: the pod's I/O failed across the node plugin upgrade: $(kubectl -n "$ns" logs busy)"
    echo "ok  upgrade: $(kubectl -n "$ns" logs busy | tail -n1) with hearth-node replaced ($before -> $after)" >&2
    kubectl delete namespace "$ns" --wait=false
}

if want sanity; then run_sanity; fi
if want e2e; then run_e2e; fi
if want locality; then run_locality; fi
if want upgrade; then run_upgrade; fi
log "all requested steps passed: $STEPS"
