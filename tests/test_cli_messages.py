"""The command line a newcomer can trust: every message in Chinese (argparse's included), no
raw exception text or driver English, a closed pipe ends quietly, `--store` after the
subcommand, Beijing time and aligned tables in what it prints."""

from __future__ import annotations

import subprocess

from tests.conftest import gridmap_exe
from ui import terminal


def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([gridmap_exe(), *args], capture_output=True, text=True, input=stdin,
                          timeout=120)


def test_argparse_speaks_chinese():
    out = run("route", "120")
    assert out.returncode == 2 and "缺少必需的参数：lat" in out.stderr
    assert "required" not in out.stderr
    out = run("route", "东", "32")
    assert "无效的数字值" in out.stderr and "invalid" not in out.stderr
    out = run("route", "--help")
    assert "用法：" in out.stdout and "显示本帮助并退出" in out.stdout


def test_missing_files_and_unreachable_databases_in_words(sample_store, tmp_path):
    out = run("--store", str(sample_store), "assign", "nope.csv")
    assert out.returncode == 2 and "nope.csv：文件不存在" in out.stderr
    assert "Errno" not in out.stderr
    out = run("--store", str(sample_store), "assign", str(tmp_path))  # a folder, not a file
    assert out.returncode == 2 and "这是一个目录，不是文件" in out.stderr
    empty = tmp_path / "empty.gpkg"
    empty.touch()
    out = run("--store", str(empty), "layers")
    assert out.returncode == 2 and "数据库文件是空的（0 字节）" in out.stderr
    assert empty.stat().st_size == 0  # left as it was
    out = run("--store", str(sample_store), "audit", "list", "--limit", "-1")
    assert out.returncode == 2 and "“-1”不是大于等于 1 的整数" in out.stderr
    out = run("--store", "postgresql://u:secret-pw@127.0.0.1:1/db", "layers")
    assert out.returncode == 2 and "连接被拒绝" in out.stderr
    assert "secret-pw" not in out.stderr and "Connection refused" not in out.stderr
    out = run("--store", "mysql://x@h/db", "layers")
    assert "不支持的数据库地址" in out.stderr


def test_store_after_the_subcommand_and_beijing_time(sample_store):
    out = run("layers", "--store", str(sample_store))
    assert out.returncode == 0 and "北京时间" in out.stdout and "Z）" not in out.stdout
    rows = [line for line in out.stdout.splitlines() if "版本 " in line and "  " in line]
    columns = {terminal.width(line.split("版本")[0]) for line in rows}
    assert len(columns) == 1  # the counts line up, Chinese titles and all


def test_swapped_flag_in_words(sample_store):
    out = run("--store", str(sample_store), "route", "32.01", "120.86")
    assert out.returncode == 0 and "标记：经纬度顺序已交换" in out.stdout


def test_a_closed_pipe_ends_quietly(sample_store):
    for _ in range(3):
        proc = subprocess.run(
            f"'{gridmap_exe()}' --store '{sample_store}' route 120.86 32.01 --json "
            "| head -c 1", shell=True, capture_output=True, timeout=120)
        err = proc.stderr.decode("utf-8", "replace")
        assert "BrokenPipe" not in err and "内部错误" not in err and "Exception" not in err


def test_a_killed_sample_build_leaves_no_store(tmp_path):
    """`make run` builds the sample when the store is missing: a build killed half-way must not
    leave a store that the next `make run` would take as done."""
    import signal
    import time

    store = tmp_path / "gridmap.gpkg"
    proc = subprocess.Popen([gridmap_exe(), "--store", str(store), "demo", "--out",
                             str(tmp_path / "files")], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not (tmp_path / "gridmap.gpkg.building").exists() and time.monotonic() < deadline:
        time.sleep(0.05)  # killed while the store is being written
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not store.exists()
    out = run("--store", str(store), "layers")
    assert out.returncode == 2 and "数据库文件不存在" in out.stderr
