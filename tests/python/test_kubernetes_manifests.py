"""Kubernetes manifests under deploy/kubernetes, checked without a cluster.

Every Kubernetes object there is validated against the Kubernetes API's schema
(kubernetes-validate, strict: unknown fields are errors) at a fixed Kubernetes version.
The kustomize overlays (gpu/, optional/, bucket/) are rendered here with the subset of
kustomize they use (directory resources and strategic merge patches, containers matched
by name, `$patch: delete`), and what they render is validated too; where `kubectl` or
`kustomize` is installed, its own rendering must agree. Then the shape a user relies on:
a gateway in attach mode and its worker containers sharing an in-memory socket volume,
probes, a termination grace period that covers the drain, a model config TF Serving's
own parser reads, GPUs for the workers only, the queue-depth HPA's metric traced back
to the series the gateway exports, and models read from a bucket through a per-pod
cache with the credentials in the gateway alone."""
import copy
import pathlib
import re
import shutil
import subprocess

import kubernetes_validate
import pytest
import yaml
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format
from tensorflow_serving.config import model_server_config_pb2

ROOT = pathlib.Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy" / "kubernetes"
# The oldest Kubernetes these manifests are for (the workers' preStop `sleep` action is
# on by default from 1.30).
KUBERNETES_VERSION = "1.30"
SOCKET_DIR = "/run/tfgate"
# A directory of the gateway's own inside the volume: the gateway refuses a socket whose
# directory others may enter, and an emptyDir's root is open to every user.
SOCKET = f"{SOCKET_DIR}/private/workers.sock"
# The image's user (Dockerfile `USER`).
IMAGE_UID = 10001
REST_PORT = 8501
GRPC_PORT = 8500
METRICS_PATH = "/monitoring/prometheus/metrics"
ADAPTER_RULES = DEPLOY / "optional" / "prometheus-adapter-rules.yaml"
# The bucket overlay's model cache: the gateway writes it, the workers read it, at one path
# (the image's /var/cache/tfgate).
CACHE_DIR = "/var/cache/tfgate"
BUCKET = DEPLOY / "bucket"
OVERLAYS = ["", "gpu", "optional", "bucket"]


def validate(obj):
    """Raises kubernetes_validate.ValidationError (or SchemaNotFoundError for an unknown
    kind) unless `obj` is a valid object of the Kubernetes API at KUBERNETES_VERSION."""
    version = kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    assert version == KUBERNETES_VERSION, version


def load(path):
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def kustomizations():
    return sorted(DEPLOY.rglob("kustomization.yaml"))


def patch_files():
    """Files the kustomizations use as patches (partial objects, validated once applied)."""
    patches = set()
    for k in kustomizations():
        spec = load(k)[0]
        for p in spec.get("patches", []):
            patches.add((k.parent / p["path"]).resolve())
        for p in spec.get("patchesStrategicMerge", []):
            patches.add((k.parent / p).resolve())
    return patches


# Patches that are not whole objects (validated once applied, in the rendered overlay).
PARTIAL_PATCHES = {"gpu/workers-gpu.yaml", "bucket/deployment-bucket.yaml",
                   "bucket/no-models-claim.yaml"}


def manifest_files():
    """Every YAML file that is a Kubernetes object on its own."""
    files = sorted(p for p in DEPLOY.rglob("*.y*ml") if p.suffix in (".yaml", ".yml"))
    return [p for p in files if p.name != "kustomization.yaml"
            and str(p.relative_to(DEPLOY)) not in PARTIAL_PATCHES]


def documents():
    return [pytest.param(doc, id=f"{path.relative_to(DEPLOY)}#{i}")
            for path in manifest_files() for i, doc in enumerate(load(path))]


# Lists that strategic merge patching merges by a key; others are replaced.
MERGE_KEYS = {"containers": "name", "initContainers": "name", "volumes": "name",
              "volumeMounts": "mountPath", "env": "name", "ports": "containerPort"}


def strategic_merge(base, patch, key=None):
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for k, v in patch.items():
            out[k] = strategic_merge(base[k], v, k) if k in base else copy.deepcopy(v)
        return out
    if isinstance(base, list) and isinstance(patch, list) and key in MERGE_KEYS:
        field = MERGE_KEYS[key]
        out = [copy.deepcopy(item) for item in base]
        for item in patch:
            matches = [i for i, b in enumerate(out) if b.get(field) == item.get(field)]
            if item.get("$patch") == "delete":
                # `- {field: value, $patch: delete}` removes that item.
                assert matches, f"{key}: nothing to delete where {field} is {item[field]!r}"
                del out[matches[0]]
            elif matches:
                out[matches[0]] = strategic_merge(out[matches[0]], item, None)
            else:
                out.append(copy.deepcopy(item))
        return out
    return copy.deepcopy(patch)


def render(directory):
    """What `kubectl apply -k directory` would apply."""
    spec = load(directory / "kustomization.yaml")[0]
    objects = []
    for resource in spec.get("resources", []):
        path = (directory / resource).resolve()
        objects += render(path) if path.is_dir() else load(path)
    for p in spec.get("patches", []):
        (patch,) = load(directory / p["path"])
        targets = [i for i, o in enumerate(objects)
                   if (o["kind"], o["metadata"]["name"]) ==
                   (patch["kind"], patch["metadata"]["name"])]
        assert len(targets) == 1, f"{p['path']} patches {len(targets)} objects"
        if patch.get("$patch") == "delete":
            # A whole object with `$patch: delete` removes it.
            del objects[targets[0]]
        else:
            objects[targets[0]] = strategic_merge(objects[targets[0]], patch)
    names = [(o["kind"], o["metadata"]["name"]) for o in objects]
    assert len(names) == len(set(names)), f"duplicate objects in {directory}: {names}"
    return objects


def one(objects, kind):
    found = [o for o in objects if o["kind"] == kind]
    assert len(found) == 1, f"{len(found)} {kind} objects"
    return found[0]


def flags(container):
    """`--name=value` arguments as a dict."""
    out = {}
    for arg in container.get("args", []):
        m = re.fullmatch(r"--([a-z0-9_]+)=(.*)", arg)
        assert m, f"{container['name']}: argument {arg!r} is not --name=value"
        out[m.group(1)] = m.group(2)
    return out


def split_pod(deployment):
    containers = deployment["spec"]["template"]["spec"]["containers"]
    gateways = [c for c in containers if c["name"] == "gateway"]
    assert len(gateways) == 1
    workers = [c for c in containers if c["name"] != "gateway"]
    return gateways[0], workers


def port_number(container, port):
    if isinstance(port, int):
        return port
    (number,) = [p["containerPort"] for p in container["ports"] if p["name"] == port]
    return number


def monitoring_config_class():
    """TF Serving's MonitoringConfig message. The tensorflow-serving-api wheel does not ship
    it; tfgate describes it in proto/tfgate/monitoring_config.proto, which is read here
    (its plain `type name = number;` fields) into a descriptor."""
    source = (ROOT / "proto" / "tfgate" / "monitoring_config.proto").read_text()
    source = re.sub(r"//[^\n]*", "", source)
    package = re.search(r"^package\s+([\w.]+);", source, re.M).group(1)
    file = descriptor_pb2.FileDescriptorProto(name="k8s_test_monitoring_config.proto",
                                              package=package, syntax="proto3")
    scalars = {"bool": descriptor_pb2.FieldDescriptorProto.TYPE_BOOL,
               "string": descriptor_pb2.FieldDescriptorProto.TYPE_STRING}
    for name, body in re.findall(r"message\s+(\w+)\s*\{([^}]*)\}", source):
        message = file.message_type.add(name=name)
        for type_, field, number in re.findall(r"(\w+)\s+(\w+)\s*=\s*(\d+)\s*;", body):
            f = message.field.add(name=field, number=int(number),
                                  label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL)
            if type_ in scalars:
                f.type = scalars[type_]
            else:
                f.type = descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE
                f.type_name = f".{package}.{type_}"
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return message_factory.GetMessageClass(
        pool.FindMessageTypeByName(f"{package}.MonitoringConfig"))


def cpu_cores(quantity):
    q = str(quantity)
    return float(q[:-1]) / 1000 if q.endswith("m") else float(q)


BASE = render(DEPLOY)
DEPLOYMENT = one(BASE, "Deployment")


# Schema validation.

def test_manifests_exist():
    kinds = sorted(o["kind"] for o in BASE)
    assert kinds == sorted(["ConfigMap", "PersistentVolumeClaim", "Deployment", "Service",
                            "PodDisruptionBudget", "HorizontalPodAutoscaler"])
    assert len(documents()) >= 9


def test_only_patches_skip_validation_on_their_own():
    assert {(DEPLOY / p).resolve() for p in PARTIAL_PATCHES} <= patch_files()


def test_base_kustomization_lists_every_base_manifest():
    listed = set(load(DEPLOY / "base" / "kustomization.yaml")[0]["resources"])
    present = {p.name for p in (DEPLOY / "base").glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == present
    # `kubectl apply -k deploy/kubernetes` applies the base.
    assert load(DEPLOY / "kustomization.yaml")[0]["resources"] == ["base"]


def test_no_overlay_sits_inside_its_base():
    """kustomize refuses a resource directory that contains the kustomization naming it
    ("cycle detected: candidate root ... contains visited root")."""
    for k in kustomizations():
        for resource in load(k)[0].get("resources", []):
            path = (k.parent / resource).resolve()
            if path.is_dir():
                assert not k.parent.resolve().is_relative_to(path), f"{k}: {resource}"


@pytest.mark.parametrize("doc", documents())
def test_manifest_validates(doc):
    validate(doc)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_rendered_kustomization_validates(overlay):
    objects = render(DEPLOY / overlay)
    # The bucket variant has no models claim.
    assert len(objects) == len(BASE) - (overlay == "bucket")
    for obj in objects:
        validate(obj)


def kustomize_command():
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    return None


def canonical(value, key=None):
    """An object with the lists that strategic merge patching merges sorted by their
    merge key: a patch may add an item at the front (kustomize) or the end (here)."""
    if isinstance(value, dict):
        return {k: canonical(v, k) for k, v in value.items()}
    if isinstance(value, list):
        items = [canonical(v) for v in value]
        if key in MERGE_KEYS and all(isinstance(v, dict) for v in items):
            items.sort(key=lambda v: str(v.get(MERGE_KEYS[key])))
        return items
    return value


@pytest.mark.skipif(kustomize_command() is None, reason="neither kustomize nor kubectl is installed")
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_kustomize_renders_what_this_test_renders(overlay):
    out = subprocess.run(kustomize_command() + [str(DEPLOY / overlay)], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    theirs = {(o["kind"], o["metadata"]["name"]): canonical(o)
              for o in yaml.safe_load_all(out.stdout) if o}
    ours = {(o["kind"], o["metadata"]["name"]): canonical(o) for o in render(DEPLOY / overlay)}
    assert theirs == ours


def broken_replicas(d):
    d["spec"]["replicas"] = "two"


def broken_unknown_container_field(d):
    d["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"


def broken_missing_selector(d):
    del d["spec"]["selector"]


def broken_probe_port(d):
    d["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGet"]["port"] = [8501]


@pytest.mark.parametrize("breakage", [broken_replicas, broken_unknown_container_field,
                                      broken_missing_selector, broken_probe_port])
def test_validation_rejects_a_broken_manifest(breakage):
    broken = copy.deepcopy(DEPLOYMENT)
    validate(broken)
    breakage(broken)
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(broken)


def test_validation_rejects_an_unknown_kind():
    with pytest.raises(kubernetes_validate.SchemaNotFoundError):
        validate({"apiVersion": "apps/v1", "kind": "Deploymnet", "metadata": {"name": "x"}})


# The pod.

def gateway_flag_names():
    """The flags the gateway defines (`#[arg(long = "...")]` in its config.rs)."""
    source = (ROOT / "gateway" / "src" / "config.rs").read_text()
    return set(re.findall(r'long\s*=\s*"([a-z0-9_]+)"', source))


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_gateway_knows_every_flag_it_is_given(overlay):
    gateway, _ = split_pod(one(render(DEPLOY / overlay), "Deployment"))
    known = gateway_flag_names()
    assert {"port", "worker_socket", "model_cache_dir"} <= known
    assert set(flags(gateway)) <= known, set(flags(gateway)) - known


def test_pod_is_a_gateway_in_attach_mode_and_its_workers():
    gateway, workers = split_pod(DEPLOYMENT)
    assert len(workers) >= 2
    assert [w["name"] for w in workers] == [f"worker-{i}" for i in range(len(workers))]
    images = {c["image"] for c in [gateway] + workers}
    assert images == {"tfgate:latest"}
    assert gateway["command"] == ["/usr/local/bin/tfgate"]
    g = flags(gateway)
    assert g["worker_socket"] == SOCKET
    assert int(g["num_workers"]) == len(workers)
    assert g["port"] == str(GRPC_PORT) and g["rest_api_port"] == str(REST_PORT)
    for w in workers:
        assert w["command"] == ["/usr/local/bin/tfgate-worker"]
        assert flags(w) == {"gateway_socket": SOCKET}
        assert "ports" not in w and "livenessProbe" not in w and "readinessProbe" not in w


def test_all_containers_share_one_in_memory_socket_volume():
    pod = DEPLOYMENT["spec"]["template"]["spec"]
    assert not pod.get("shareProcessNamespace", False)
    assert not pod.get("hostIPC", False)
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounted = set()
    for c in pod["containers"]:
        (mount,) = [m for m in c["volumeMounts"] if m["mountPath"] == SOCKET_DIR]
        assert not mount.get("readOnly", False)
        mounted.add(mount["name"])
    assert len(mounted) == 1
    assert volumes[mounted.pop()]["emptyDir"]["medium"] == "Memory"


def test_containers_run_as_the_images_user_on_a_read_only_root():
    pod = DEPLOYMENT["spec"]["template"]["spec"]
    ctx = pod["securityContext"]
    assert ctx["runAsNonRoot"] is True
    # One uid for all: the gateway refuses workers of another user.
    assert ctx["runAsUser"] == IMAGE_UID and ctx["runAsGroup"] == IMAGE_UID
    volumes = {v["name"]: v for v in pod["volumes"]}
    tmp_volumes = []
    for c in pod["containers"]:
        assert "runAsUser" not in c.get("securityContext", {}), c["name"]
        sc = c["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True, c["name"]
        assert sc["allowPrivilegeEscalation"] is False, c["name"]
        assert sc["capabilities"]["drop"] == ["ALL"], c["name"]
        # The gateway's runtime directory (and anything TensorFlow writes) goes to /tmp.
        (tmp,) = [m for m in c["volumeMounts"] if m["mountPath"] == "/tmp"]
        assert volumes[tmp["name"]]["emptyDir"]["medium"] == "Memory"
        tmp_volumes.append(tmp["name"])
    assert len(set(tmp_volumes)) == len(tmp_volumes), "each container has its own /tmp"


def test_the_image_runs_as_the_manifests_user():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert f"USER {IMAGE_UID}:{IMAGE_UID}" in dockerfile.splitlines()


def test_workers_read_models_from_the_claim():
    pod = DEPLOYMENT["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    claim = one(BASE, "PersistentVolumeClaim")["metadata"]["name"]
    assert claim == "tfgate-models"
    _, workers = split_pod(DEPLOYMENT)
    for w in workers:
        (mount,) = [m for m in w["volumeMounts"] if m["mountPath"] == "/models"]
        assert mount["readOnly"] is True
        assert volumes[mount["name"]]["persistentVolumeClaim"]["claimName"] == claim


def test_gateway_probes():
    gateway, _ = split_pod(DEPLOYMENT)
    for probe, path in [("startupProbe", "/healthz"), ("livenessProbe", "/healthz"),
                        ("readinessProbe", "/readyz")]:
        get = gateway[probe]["httpGet"]
        assert get["path"] == path, probe
        assert port_number(gateway, get["port"]) == REST_PORT, probe
    startup = gateway["startupProbe"]
    # The ports open once the models are loaded: allow minutes for that.
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 300


def test_termination_grace_covers_the_drain():
    gateway, workers = split_pod(DEPLOYMENT)
    g = flags(gateway)
    drain_s = (int(g["drain_delay_ms"]) + int(g["drain_timeout_ms"])) / 1000
    assert drain_s >= 5
    grace = DEPLOYMENT["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace >= drain_s
    # Workers are held back from SIGTERM (which makes them leave) until the gateway has
    # drained, and still stop within the grace period.
    for w in workers:
        hold = w["lifecycle"]["preStop"]["sleep"]["seconds"]
        assert drain_s <= hold < grace, w["name"]
    assert "lifecycle" not in gateway


def test_every_container_has_resources_for_the_cpu_hpa():
    gateway, workers = split_pod(DEPLOYMENT)
    for c in [gateway] + workers:
        assert cpu_cores(c["resources"]["requests"]["cpu"]) > 0, c["name"]
        assert c["resources"]["limits"]["memory"], c["name"]
    g = flags(gateway)
    for w in workers:
        cores = cpu_cores(w["resources"]["limits"]["cpu"])
        assert int(g["tensorflow_intra_op_parallelism"]) == cores
        assert int(g["tensorflow_inter_op_parallelism"]) == cores


def test_prometheus_annotations_match_the_monitoring_config():
    annotations = DEPLOYMENT["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(REST_PORT)
    assert annotations["prometheus.io/path"] == METRICS_PATH
    config = one(BASE, "ConfigMap")
    monitoring = text_format.Parse(config["data"]["monitoring.config"],
                                   monitoring_config_class()())
    assert monitoring.prometheus_config.enable
    assert monitoring.prometheus_config.path == METRICS_PATH


def test_configmap_holds_a_model_server_config_the_gateway_reads():
    gateway, _ = split_pod(DEPLOYMENT)
    g = flags(gateway)
    config = one(BASE, "ConfigMap")
    pod = DEPLOYMENT["spec"]["template"]["spec"]
    (volume,) = [v for v in pod["volumes"] if v.get("configMap", {}).get("name")
                 == config["metadata"]["name"]]
    (mount,) = [m for m in gateway["volumeMounts"] if m["name"] == volume["name"]]
    for flag, key in [("model_config_file", "models.config"),
                      ("monitoring_config_file", "monitoring.config")]:
        assert g[flag] == f"{mount['mountPath']}/{key}"
        assert key in config["data"]
    parsed = text_format.Parse(config["data"]["models.config"],
                               model_server_config_pb2.ModelServerConfig())
    models = parsed.model_config_list.config
    assert [m.name for m in models] == ["half_plus_two"]
    for m in models:
        assert m.base_path.startswith("/models/")
        assert m.model_platform == "tensorflow"


def test_service_pdb_and_hpa_point_at_the_pods():
    labels = DEPLOYMENT["spec"]["template"]["metadata"]["labels"]
    assert DEPLOYMENT["spec"]["selector"]["matchLabels"].items() <= labels.items()
    gateway, _ = split_pod(DEPLOYMENT)

    service = one(BASE, "Service")
    assert service["spec"].get("type", "ClusterIP") == "ClusterIP"
    assert service["spec"]["selector"].items() <= labels.items()
    ports = {p["name"]: p for p in service["spec"]["ports"]}
    assert (ports["grpc"]["port"], ports["grpc"]["appProtocol"]) == (GRPC_PORT, "grpc")
    assert (ports["http"]["port"], ports["http"]["appProtocol"]) == (REST_PORT, "http")
    for p in ports.values():
        assert port_number(gateway, p["targetPort"]) == p["port"]

    pdb = one(BASE, "PodDisruptionBudget")
    assert pdb["apiVersion"] == "policy/v1"
    assert pdb["spec"]["minAvailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()

    hpa = one(BASE, "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                             "name": DEPLOYMENT["metadata"]["name"]}
    # A node drain can evict one pod and leave the PDB's minimum serving.
    assert hpa["spec"]["minReplicas"] > pdb["spec"]["minAvailable"]
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "Resource" and metric["resource"]["name"] == "cpu"
    assert metric["resource"]["target"] == {"type": "Utilization", "averageUtilization": 70}
    # The HPA owns the replica count.
    assert "replicas" not in DEPLOYMENT["spec"]


def test_every_object_is_named_tfgate_and_namespace_less():
    for obj in BASE:
        assert "namespace" not in obj["metadata"]
        assert obj["metadata"]["name"] == ("tfgate-models" if obj["kind"] ==
                                           "PersistentVolumeClaim" else "tfgate")


# Variants.

def test_gpu_variant_gives_each_worker_one_gpu_and_the_gateway_none():
    objects = render(DEPLOY / "gpu")
    deployment = one(objects, "Deployment")
    gateway, workers = split_pod(deployment)
    assert "nvidia.com/gpu" not in gateway["resources"].get("limits", {})
    assert "nvidia.com/gpu" not in gateway["resources"].get("requests", {})
    _, base_workers = split_pod(DEPLOYMENT)
    assert [w["name"] for w in workers] == [w["name"] for w in base_workers]
    for w in workers:
        assert w["resources"]["limits"]["nvidia.com/gpu"] == 1, w["name"]
        # The patch adds the GPU and keeps the rest.
        assert w["resources"]["limits"]["cpu"] == base_workers[0]["resources"]["limits"]["cpu"]
    assert int(flags(gateway)["num_workers"]) == len(workers)
    # Nothing but the Deployment changes.
    assert [o for o in objects if o["kind"] != "Deployment"] == \
        [o for o in BASE if o["kind"] != "Deployment"]


def tfgate_series():
    """The :tfgate: series names the gateway exports."""
    source = (ROOT / "gateway" / "src" / "monitoring" / "own_series.rs").read_text()
    return set(re.findall(r'"(:tfgate:[a-z_:]+)"', source))


def test_queue_depth_hpa_scales_on_the_series_the_adapter_derives():
    objects = render(DEPLOY / "optional")
    hpa = one(objects, "HorizontalPodAutoscaler")
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "Pods"
    name = metric["pods"]["metric"]["name"]
    assert metric["pods"]["target"]["type"] == "AverageValue"
    assert hpa["spec"]["scaleTargetRef"]["name"] == DEPLOYMENT["metadata"]["name"]
    # Only the HPA differs from the CPU setup.
    assert [o for o in objects if o["kind"] != "HorizontalPodAutoscaler"] == \
        [o for o in BASE if o["kind"] != "HorizontalPodAutoscaler"]

    (adapter,) = load(ADAPTER_RULES)
    assert adapter["kind"] == "ConfigMap"
    rules = yaml.safe_load(adapter["data"]["config.yaml"])["rules"]
    (rule,) = [r for r in rules if r["name"]["as"] == name]
    series = re.search(r'__name__="([^"]+)"', rule["seriesQuery"]).group(1)
    assert series == ":tfgate:worker:requests_in_flight"
    assert series in tfgate_series()
    assert re.fullmatch(rule["name"]["matches"], series)
    assert rule["resources"]["overrides"]["pod"] == {"resource": "pod"}
    assert rule["resources"]["overrides"]["namespace"] == {"resource": "namespace"}
    # Summed over a pod's workers.
    query = rule["metricsQuery"].replace(" ", "")
    assert query == "sum(<<.Series>>{<<.LabelMatchers>>})by(<<.GroupBy>>)"


# Models in a bucket.

BUCKET_OBJECTS = render(BUCKET)
BUCKET_DEPLOYMENT = one(BUCKET_OBJECTS, "Deployment")


def quantity_bytes(quantity):
    """A Kubernetes memory/storage quantity (`10Gi`, `500M`, `1024`) in bytes."""
    m = re.fullmatch(r"(\d+)(Ki|Mi|Gi|Ti|k|M|G|T)?", str(quantity))
    assert m, quantity
    scale = {None: 1, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40,
             "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}[m.group(2)]
    return int(m.group(1)) * scale


def mounts_at(container, path):
    return [m for m in container.get("volumeMounts", []) if m["mountPath"] == path]


def test_bucket_variant_has_no_models_volume_and_no_init_container():
    kinds = sorted(o["kind"] for o in BUCKET_OBJECTS)
    assert kinds == sorted(["ConfigMap", "Deployment", "Service", "PodDisruptionBudget",
                            "HorizontalPodAutoscaler"])
    pod = BUCKET_DEPLOYMENT["spec"]["template"]["spec"]
    assert "initContainers" not in pod
    assert not [v for v in pod["volumes"] if "persistentVolumeClaim" in v]
    for c in pod["containers"]:
        assert not mounts_at(c, "/models"), c["name"]
    # No Secret is applied from git: the placeholders must never overwrite real keys.
    assert not [o for o in BUCKET_OBJECTS if o["kind"] == "Secret"]
    # Everything else is the base's: the Service, the PDB, and the HPA's replicas (at
    # least two pods, each with a cache of its own reading the one bucket).
    for kind in ["Service", "PodDisruptionBudget", "HorizontalPodAutoscaler"]:
        assert one(BUCKET_OBJECTS, kind) == one(BASE, kind), kind
    assert one(BUCKET_OBJECTS, "HorizontalPodAutoscaler")["spec"]["minReplicas"] >= 2
    assert "replicas" not in BUCKET_DEPLOYMENT["spec"]


def test_bucket_variant_models_config_names_a_bucket():
    config = one(BUCKET_OBJECTS, "ConfigMap")
    parsed = text_format.Parse(config["data"]["models.config"],
                               model_server_config_pb2.ModelServerConfig())
    models = parsed.model_config_list.config
    assert [m.name for m in models] == ["half_plus_two"]
    for m in models:
        assert re.fullmatch(r"(s3|gs)://[^/]+/.+", m.base_path), m.base_path
    # The monitoring config is the base's.
    assert config["data"]["monitoring.config"] == \
        one(BASE, "ConfigMap")["data"]["monitoring.config"]


def test_bucket_variant_gateway_mirrors_into_a_cache_the_workers_read():
    gateway, workers = split_pod(BUCKET_DEPLOYMENT)
    base_gateway, base_workers = split_pod(DEPLOYMENT)
    assert [w["name"] for w in workers] == [w["name"] for w in base_workers]
    g = flags(gateway)
    assert g["model_cache_dir"] == CACHE_DIR
    # The base's flags, kept (the patch repeats the args list whole), plus the cache's.
    assert gateway["args"][:len(base_gateway["args"])] == base_gateway["args"]
    added = set(flags(gateway)) - set(flags(base_gateway))
    assert added == {"model_cache_dir", "model_cache_max_bytes",
                     "file_system_poll_wait_seconds"}, added
    assert int(g["file_system_poll_wait_seconds"]) >= 1

    pod = BUCKET_DEPLOYMENT["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    (mount,) = mounts_at(gateway, CACHE_DIR)
    assert not mount.get("readOnly", False)
    cache = volumes[mount["name"]]
    # On the node's disk, one per pod, bounded; the gateway's bound stays under it.
    assert set(cache) == {"name", "emptyDir"}
    assert cache["emptyDir"].get("medium", "") == ""
    size_limit = quantity_bytes(cache["emptyDir"]["sizeLimit"])
    max_bytes = int(g["model_cache_max_bytes"])
    assert 0.8 * size_limit <= max_bytes <= size_limit
    requested = gateway["resources"]["requests"]["ephemeral-storage"]
    assert quantity_bytes(requested) >= size_limit
    for w in workers:
        (wm,) = mounts_at(w, CACHE_DIR)
        assert wm["name"] == mount["name"], w["name"]
        assert wm["readOnly"] is True, w["name"]
        # Workers keep their flags: they load what the gateway hands them.
        assert flags(w) == {"gateway_socket": SOCKET}
        assert w["resources"] == base_workers[0]["resources"]
    # Nobody else mounts the cache.
    others = [c["name"] for c in pod["containers"] if c not in workers and c is not gateway
              and [m for m in c.get("volumeMounts", []) if m["name"] == mount["name"]]]
    assert not others


def secret_names(container):
    names = {e["secretRef"]["name"] for e in container.get("envFrom", []) if "secretRef" in e}
    names |= {e["valueFrom"]["secretKeyRef"]["name"] for e in container.get("env", [])
              if "secretKeyRef" in e.get("valueFrom", {})}
    return names


def test_bucket_credentials_reach_the_gateway_only():
    gateway, workers = split_pod(BUCKET_DEPLOYMENT)
    (secret,) = load(BUCKET / "credentials.example.yaml")
    assert secret["kind"] == "Secret"
    assert secret_names(gateway) == {secret["metadata"]["name"]}
    # The example holds placeholders for the AWS variables, plainly not real keys.
    data = secret["stringData"]
    assert set(data) == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    for value in data.values():
        assert "EXAMPLE" in value and "NOT-A-REAL" in value, value
    assert not re.fullmatch(r"(AKIA|ASIA)[A-Z0-9]{16}", data["AWS_ACCESS_KEY_ID"])
    # Non-secret settings as plain variables of the gateway.
    env = {e["name"]: e for e in gateway.get("env", [])}
    assert "value" in env["AWS_REGION"]
    pod = BUCKET_DEPLOYMENT["spec"]["template"]["spec"]
    for w in workers:
        assert "env" not in w and "envFrom" not in w, w["name"]
        assert not secret_names(w)
    # No Secret reaches any container as a file either, and the pod has no API token.
    assert not [v for v in pod["volumes"] if "secret" in v or "projected" in v]
    assert pod["automountServiceAccountToken"] is False


def test_workload_identity_example_annotates_a_service_account():
    (account,) = load(BUCKET / "workload-identity.example.yaml")
    assert account["kind"] == "ServiceAccount"
    assert account["metadata"]["name"] == "tfgate"
    annotations = account["metadata"]["annotations"]
    assert re.fullmatch(r"arn:aws:iam::\d{12}:role/.+", annotations["eks.amazonaws.com/role-arn"])
    assert annotations["iam.gke.io/gcp-service-account"].endswith(".iam.gserviceaccount.com")
    assert account["automountServiceAccountToken"] is False
    # The IRSA note keeps the webhook's token away from the workers by name.
    _, workers = split_pod(BUCKET_DEPLOYMENT)
    skip = "eks.amazonaws.com/skip-containers: " + ",".join(w["name"] for w in workers)
    assert skip in (BUCKET / "deployment-bucket.yaml").read_text()
    assert skip in (BUCKET / "workload-identity.example.yaml").read_text()
