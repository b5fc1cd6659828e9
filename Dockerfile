# The Guix layer of guix-matrix: Debian sid, its guix, the substitute keys and
# the pinned channel. The image users run is scripts/Dockerfile on top of this
# layer once `guix pull` has been run in it and committed (the harness's pull
# stage), so a change of a script never re-runs the pull. By hand:
#   docker build --platform linux/arm64 -t guix-matrix-guix .
#   docker build --platform linux/arm64 -f scripts/Dockerfile \
#     --build-arg GUIX_IMAGE=guix-matrix-guix -t guix-matrix .
# No step needs privileged mode or a BuildKit frontend; what needs the daemon's
# namespaces (scripts/pull.sh) runs as "run with capabilities, commit".
ARG BASE_IMAGE=debian:sid-slim
FROM ${BASE_IMAGE}

# The time the build's own records say (useradd's password-change day): the
# harness passes its base's date, so the same inputs make the same bits.
ARG SOURCE_DATE_EPOCH

# Guix's build users, before the package so its postinst finds them.
RUN groupadd --system guixbuild \
	&& for i in $(seq -w 1 10); do \
		useradd --system -g guixbuild -G guixbuild -d /var/empty \
			-s /usr/sbin/nologin -c "Guix build user $i" "guixbuilder$i"; \
	done

# Debian's guix 1.5.0. An expired Release file (a frozen mirror) is refused
# unless the harness is told a test needs it (GUIX_MATRIX_ALLOW_EXPIRED_MIRROR).
ARG APT_CHECK_VALID_UNTIL=true
RUN apt-get -o Acquire::Check-Valid-Until="$APT_CHECK_VALID_UNTIL" -o Acquire::Retries=5 update \
	&& DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
		-o Acquire::Retries=5 guix ca-certificates git gzip \
	&& rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/log/apt \
		/var/log/dpkg.log /var/log/alternatives.log /var/cache/debconf/*-old \
		/var/lib/dpkg/*-old /var/cache/ldconfig/aux-cache \
	&& mkdir -p /gnu/store /var/guix /var/log/guix /root/.cache/guix

ENV SSL_CERT_DIR=/etc/ssl/certs \
	SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
	GIT_SSL_CAINFO=/etc/ssl/certs/ca-certificates.crt

# Substitute servers: keys authorized, URLs the entry point's default.
COPY substitutes/ /etc/guix-matrix/substitutes/
RUN for key in /etc/guix-matrix/substitutes/*.pub; do \
		guix archive --authorize <"$key"; \
	done \
	&& cp /etc/guix-matrix/substitutes/urls /etc/guix-matrix/substitute-urls

# The pinned channel: a plain `guix pull` stays on this commit.
COPY channels/channels.scm /root/.config/guix/channels.scm
