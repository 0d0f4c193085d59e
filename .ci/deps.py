#!/usr/bin/env python3
"""Two checks on the dependency graph, from `cargo metadata --locked` (the lock file decides).

1. No duplicate majors of our own dependencies: every crate a workspace member depends on
directly must be used on one semver line by all our crates, and that line must be the newest
one anywhere in the build (so prost 0.13 next to a tonic on prost 0.14 fails).

Older lines that only other crates pull in (thiserror 1 under the volo peer's protobuf, syn 2
under prost-derive) are ours to note, not to fix: they are printed, and `cargo tree -d` lists
them.

2. The MSRV holds for what a user compiles: every crate in the normal and build dependencies of
our library crates declares a `rust-version` no newer than the workspace's. (The toolchain of
that version is not on every machine, so `.ci/run` builds with it only where it is installed;
clippy's `incompatible_msrv` lint covers our own use of newer std APIs.)"""
import json
import subprocess
import sys
from collections import defaultdict


def compat(version: str) -> str:
    """The semver-compatibility line: 1.2.3 -> "1", 0.14.6 -> "0.14", 0.0.3 -> "0.0.3"."""
    parts = version.split("+")[0].split("-")[0].split(".")
    for i, p in enumerate(parts):
        if p != "0":
            return ".".join(parts[: i + 1])
    return ".".join(parts)


host = next(
    line.split(": ", 1)[1]
    for line in subprocess.check_output(["rustc", "-vV"], text=True).splitlines()
    if line.startswith("host: ")
)
meta = json.loads(
    subprocess.check_output(
        ["cargo", "metadata", "--format-version", "1", "--locked", "--filter-platform", host]
    )
)
members = set(meta["workspace_members"])
pkgs = {p["id"]: p for p in meta["packages"]}
ours = defaultdict(set)  # a direct dependency's name -> the lines our crates use
for node in meta["resolve"]["nodes"]:
    if node["id"] in members:
        for dep in node["deps"]:
            if dep["pkg"] not in members:
                p = pkgs[dep["pkg"]]
                ours[p["name"]].add(compat(p["version"]))

everywhere = defaultdict(set)  # the same names -> every line anywhere in the build
for node in meta["resolve"]["nodes"]:
    p = pkgs[node["id"]]
    if p["name"] in ours:
        everywhere[p["name"]].add(compat(p["version"]))


def key(line: str):
    return [int(x) for x in line.split(".")]


failures = 0
for name in sorted(ours):
    newest = max(everywhere[name], key=key)
    if len(ours[name]) > 1:
        failures += 1
        print(f"FAIL {name}: our crates use {sorted(ours[name])}; pick one line")
    elif newest not in ours[name]:
        failures += 1
        print(f"FAIL {name}: we use {sorted(ours[name])[0]}, the build also has {newest}; move up")
    elif len(everywhere[name]) > 1:
        older = sorted(everywhere[name] - ours[name], key=key)
        print(f"note {name}: ours is {newest}; older {older} only through other crates")
print(f"{len(ours)} direct dependencies checked, {failures} not on one newest line")

# 2. MSRV of everything a user's build of our libraries compiles.
LIBRARIES = {
    "rpc-core",
    "rpc-codegen",
    "rpc-transport-ttheader",
    "rpc-transport-grpc",
    "rpc-transport-shm",
    "rpc-registry-etcd",
    "rpc-grpc-services",
}


def version_key(v: str):
    parts = [int(x) for x in v.split(".")]
    return parts + [0] * (3 - len(parts))


nodes = {n["id"]: n for n in meta["resolve"]["nodes"]}
msrv = next(pkgs[i]["rust_version"] for i in members if pkgs[i]["name"] == "rpc-core")
stack = [i for i in members if pkgs[i]["name"] in LIBRARIES]
seen = set()
while stack:
    i = stack.pop()
    if i in seen:
        continue
    seen.add(i)
    for dep in nodes[i]["deps"]:
        if any(k["kind"] in (None, "build") for k in dep["dep_kinds"]):
            stack.append(dep["pkg"])
newer = sorted(
    f'{pkgs[i]["name"]} {pkgs[i]["version"]} needs {pkgs[i]["rust_version"]}'
    for i in seen
    if pkgs[i].get("rust_version")
    and version_key(pkgs[i]["rust_version"]) > version_key(msrv)
)
for line in newer:
    print(f"FAIL msrv {msrv}: {line}")
print(f"{len(seen)} crates a user compiles checked against rust-version {msrv}: {len(newer)} newer")
sys.exit(1 if failures or newer else 0)
