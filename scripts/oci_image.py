#!/usr/bin/env python3
"""Writes a single-layer OCI image (an image layout directory and its tar archive, which
`ctr images import` and `skopeo copy oci-archive:` read) from a root filesystem directory,
without a container engine and without pulling anything.

    oci_image.py --rootfs DIR --out DIR --ref NAME:TAG [--dockerfile FILE] [--config JSON]
                 [--owner PATH=UID:GID ...]

The image config comes from --config (a JSON object in the OCI config's "config" shape) and,
with --dockerfile, from the final stage of that Dockerfile (USER, ENTRYPOINT, CMD, EXPOSE,
LABEL, ENV, WORKDIR), so an image built here declares what `docker build` would. The layer is
reproducible: entries sorted, mtimes 0, owners root unless --owner says otherwise, gzip without
a timestamp; the same rootfs gives the same digest.
"""
import argparse
import gzip
import hashlib
import io
import json
import os
import shlex
import shutil
import stat
import tarfile


def dockerfile_final_stage(path):
    """Config keys set by the last stage of a Dockerfile (the instructions used here only)."""
    lines, buf = [], ""
    with open(path, encoding="utf-8") as f:
        for raw in f:
            line = raw.rstrip("\n")
            if not buf and (not line.strip() or line.lstrip().startswith("#")):
                continue
            if line.endswith("\\"):
                buf += line[:-1] + " "
                continue
            lines.append((buf + line).strip())
            buf = ""
    stage = []
    for line in lines:
        if line.split(None, 1)[0].upper() == "FROM":
            stage = []
        else:
            stage.append(line)
    cfg = {}
    for line in stage:
        word, _, rest = line.partition(" ")
        word, rest = word.upper(), rest.strip()
        if word == "USER":
            cfg["User"] = rest
        elif word in ("ENTRYPOINT", "CMD"):
            value = json.loads(rest) if rest.startswith("[") else ["/bin/sh", "-c", rest]
            cfg["Entrypoint" if word == "ENTRYPOINT" else "Cmd"] = value
        elif word == "EXPOSE":
            for port in rest.split():
                cfg.setdefault("ExposedPorts", {})[port if "/" in port else port + "/tcp"] = {}
        elif word == "LABEL":
            for pair in shlex.split(rest):
                k, _, v = pair.partition("=")
                cfg.setdefault("Labels", {})[k] = v
        elif word == "ENV":
            for pair in shlex.split(rest):
                k, _, v = pair.partition("=")
                env = [e for e in cfg.get("Env", []) if not e.startswith(k + "=")]
                cfg["Env"] = env + [f"{k}={v}"]
        elif word == "WORKDIR":
            cfg["WorkingDir"] = rest
    return cfg


def layer_tar(rootfs, owners):
    """Uncompressed, reproducible tar of rootfs."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        entries = []
        for dirpath, dirnames, filenames in os.walk(rootfs):
            dirnames.sort()
            for name in sorted(dirnames + filenames):
                entries.append(os.path.join(dirpath, name))
        for full in sorted(entries, key=lambda p: os.path.relpath(p, rootfs)):
            rel = os.path.relpath(full, rootfs)
            info = tar.gettarinfo(full, arcname=rel)
            info.mtime = 0
            info.uid, info.gid = owners.get(rel, (0, 0))
            info.uname = info.gname = ""
            info.pax_headers = {}
            if info.isreg():
                with open(full, "rb") as f:
                    tar.addfile(info, f)
            else:
                tar.addfile(info)
    return out.getvalue()


def blob(layout, data):
    digest = hashlib.sha256(data).hexdigest()
    path = os.path.join(layout, "blobs", "sha256", digest)
    with open(path, "wb") as f:
        f.write(data)
    return "sha256:" + digest, len(data)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rootfs", required=True)
    ap.add_argument("--out", required=True, help="directory: receives layout/ and image.tar")
    ap.add_argument("--ref", required=True, help="full image name, e.g. docker.io/library/x:1")
    ap.add_argument("--dockerfile")
    ap.add_argument("--config", default="{}")
    ap.add_argument("--owner", action="append", default=[])
    args = ap.parse_args()

    config = json.loads(args.config)
    if args.dockerfile:
        final = dockerfile_final_stage(args.dockerfile)
        env = config.get("Env", [])
        for e in final.pop("Env", []):
            env = [x for x in env if not x.startswith(e.split("=", 1)[0] + "=")] + [e]
        if env:
            config["Env"] = env
        config.update(final)
    owners = {}
    for o in args.owner:
        path, _, ug = o.partition("=")
        uid, _, gid = ug.partition(":")
        owners[path.strip("/")] = (int(uid), int(gid))

    layout = os.path.join(args.out, "layout")
    shutil.rmtree(layout, ignore_errors=True)
    os.makedirs(os.path.join(layout, "blobs", "sha256"))
    raw = layer_tar(args.rootfs, owners)
    diff_id = "sha256:" + hashlib.sha256(raw).hexdigest()
    gz = io.BytesIO()
    with gzip.GzipFile(fileobj=gz, mode="wb", mtime=0, compresslevel=6) as g:
        g.write(raw)
    layer_digest, layer_size = blob(layout, gz.getvalue())

    image_config = {
        "created": "1970-01-01T00:00:00Z",
        "architecture": "amd64",
        "os": "linux",
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "scripts/oci_image.py"}],
    }
    cfg_digest, cfg_size = blob(layout, json.dumps(image_config, sort_keys=True).encode())
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": cfg_digest, "size": cfg_size},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": layer_digest, "size": layer_size}],
    }
    man_digest, man_size = blob(layout, json.dumps(manifest, sort_keys=True).encode())
    tag = args.ref.rsplit(":", 1)[1] if ":" in args.ref.rsplit("/", 1)[-1] else "latest"
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": man_digest, "size": man_size,
            "platform": {"architecture": "amd64", "os": "linux"},
            "annotations": {"io.containerd.image.name": args.ref,
                            "org.opencontainers.image.ref.name": tag},
        }],
    }
    with open(os.path.join(layout, "index.json"), "w") as f:
        json.dump(index, f, sort_keys=True)
    with open(os.path.join(layout, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)

    archive = os.path.join(args.out, "image.tar")
    with tarfile.open(archive + ".tmp", "w", format=tarfile.PAX_FORMAT) as tar:
        for dirpath, dirnames, filenames in os.walk(layout):
            dirnames.sort()
            for name in sorted(filenames):
                full = os.path.join(dirpath, name)
                info = tar.gettarinfo(full, arcname=os.path.relpath(full, layout))
                info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
                with open(full, "rb") as f:
                    tar.addfile(info, f)
    os.replace(archive + ".tmp", archive)
    print(f"{args.ref} {man_digest} {archive}")


if __name__ == "__main__":
    main()
