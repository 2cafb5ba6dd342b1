"""Uploads a model directory into an S3-compatible bucket (created if missing), with
boto3 and the AWS_* environment (AWS_ENDPOINT_URL for MinIO, moto, ...):

    .venv/bin/python tests/compose/s3_upload.py models/half_plus_two s3://BUCKET/PREFIX

With --version V (repeatable), only those version directories. Used by scripts/compose-test.sh, and
for trying deploy/compose/s3.yml against a local MinIO."""

import argparse
import pathlib
import sys

import boto3
import botocore.exceptions


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("source", type=pathlib.Path, help="a base path: version directories")
    ap.add_argument("target", help="s3://BUCKET/PREFIX")
    ap.add_argument("--version", action="append", dest="versions",
                    help="only this version directory (repeatable)")
    args = ap.parse_args()
    if not args.target.startswith("s3://"):
        sys.exit(f"{args.target}: not s3://BUCKET/PREFIX")
    bucket, _, prefix = args.target[len("s3://"):].partition("/")
    prefix = prefix.strip("/")
    s3 = boto3.client("s3")
    try:
        s3.head_bucket(Bucket=bucket)
    except botocore.exceptions.ClientError:
        s3.create_bucket(Bucket=bucket)
    roots = [args.source / v for v in args.versions] if args.versions else [args.source]
    files = sorted(f for root in roots for f in root.rglob("*") if f.is_file())
    if not files:
        sys.exit(f"no files under {', '.join(map(str, roots))}")
    for f in files:
        key = "/".join(p for p in [prefix, f.relative_to(args.source).as_posix()] if p)
        s3.upload_file(str(f), bucket, key)
    print(f"uploaded {len(files)} files ({sum(f.stat().st_size for f in files)} bytes) "
          f"to s3://{bucket}/{prefix}")


if __name__ == "__main__":
    main()
