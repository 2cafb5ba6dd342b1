"""scripts/compose-test.sh may skip only where Docker is not installed: on a machine with
Docker, a compose test that cannot run (no engine reachable) fails the test command
instead of passing unseen. Checked with a PATH holding only the tools the script needs
before it reaches Docker, and a stub `docker` whose engine is unreachable."""
import pathlib
import shutil
import subprocess

ROOT = pathlib.Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "compose-test.sh"


def run(bin_dir, **env):
    return subprocess.run(
        ["bash", str(SCRIPT)], cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={"PATH": str(bin_dir), **env})


def tools(tmp_path, docker=False):
    """A bin directory with bash, dirname, date and tail, plus a stub docker."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ["bash", "dirname", "date", "tail"]:
        (bin_dir / tool).symlink_to(shutil.which(tool))
    if docker:
        stub = bin_dir / "docker"
        stub.write_text("#!/bin/sh\necho 'Cannot connect to the Docker daemon' >&2\nexit 1\n")
        stub.chmod(0o755)
    return bin_dir


def test_skipped_where_docker_is_not_installed(tmp_path):
    r = run(tools(tmp_path))
    assert r.returncode == 0, r.stderr
    assert "SKIPPED: Docker is not installed" in r.stderr


def test_fails_where_docker_is_installed_but_no_engine_answers(tmp_path):
    r = run(tools(tmp_path, docker=True))
    assert r.returncode == 1, r.stderr
    assert "FAILED: Docker is installed but the test cannot run: no Docker engine is reachable" in r.stderr
    assert "Cannot connect to the Docker daemon" in r.stderr


def test_skipped_on_purpose(tmp_path):
    r = run(tools(tmp_path, docker=True), TFGATE_COMPOSE_TEST="skip")
    assert r.returncode == 0, r.stderr
    assert "SKIPPED: TFGATE_COMPOSE_TEST=skip" in r.stderr
