# tfgate: the gateway and the worker in one slim image. The binaries, TensorFlow's two
# shared libraries and TensorFlow Text's op libraries (which every worker loads) are
# built on the host or taken from its venv, and staged in target/docker by
# scripts/docker-image.sh; nothing is compiled or downloaded here, so the image builds
# on machines that reach no registry (BASE_IMAGE=tfgate-base:bookworm, from
# scripts/docker-base.sh). The host build must target the base's glibc (Debian 12).
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}

COPY target/docker/lib/ /usr/local/lib/
COPY target/docker/bin/ /usr/local/bin/
COPY target/docker/ops/ /usr/local/lib/tfgate/ops/
# For HTTPS model stores (gs://, s3://): the bundle where rustls's platform verifier looks.
COPY target/docker/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
# /run/tfgate is where the socket volume goes; Docker copies this directory's owner and
# mode onto an empty volume mounted there, and the gateway refuses a socket directory
# others may enter: 0700, the user's own.
# /var/cache/tfgate is where a model-cache volume goes (--model_cache_dir, for gs:// and
# s3:// base paths): the gateway writes it, attached workers read it.
RUN ldconfig && mkdir -p /models && install -d -m 0700 -o 10001 -g 10001 /run/tfgate \
    && install -d -m 0755 -o 10001 -g 10001 /var/cache/tfgate

# Not root: the gateway and its workers run as one unprivileged user (the gateway takes
# workers of its own uid only). A numeric uid needs no /etc/passwd entry. The root
# filesystem may be mounted read-only: tfgate writes only under /tmp (the gateway's
# runtime directory) and the socket volume.
USER 10001:10001

# gRPC and REST, as tensorflow_model_server.
EXPOSE 8500 8501
CMD ["tfgate", "--port=8500", "--rest_api_port=8501", "--model_name=half_plus_two", "--model_base_path=/models/half_plus_two"]
