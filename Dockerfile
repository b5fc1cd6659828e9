# GNU Guix for CI/CD, on Debian sid. Built per platform by the harness
# (`cargo run -p harness -- run`), or by hand:
#   docker build --platform linux/arm64 --build-arg BASE_IMAGE=debian:sid-slim .
# No step needs privileged mode or a BuildKit frontend; what needs the daemon's
# namespaces (scripts/pull.sh) runs later as "run with capabilities, commit".
ARG BASE_IMAGE=debian:sid-slim
FROM ${BASE_IMAGE}

# Guix's build users, before the package so its postinst finds them.
RUN groupadd --system guixbuild \
	&& for i in $(seq -w 1 10); do \
		useradd --system -g guixbuild -G guixbuild -d /var/empty \
			-s /usr/sbin/nologin -c "Guix build user $i" "guixbuilder$i"; \
	done

# Debian's guix 1.5.0. The mirror's sid Release file may be past Valid-Until.
RUN apt-get -o Acquire::Check-Valid-Until=false -o Acquire::Retries=5 update \
	&& DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
		-o Acquire::Retries=5 guix ca-certificates git gzip \
	&& rm -rf /var/lib/apt/lists/* \
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

# No per-platform daemon flags are baked in: the entry point sees at run time
# whether it runs under an emulator (then --disable-chroot), so one image is
# right on every host, natively or under qemu.
ENV GUIX_DAEMON_ARGS="" \
	GUIX_MATRIX_CHROOT=auto

# The pulled (pinned) Guix before Debian's, in every form a user runs: the
# entry point, `--entrypoint bash` (BASH_ENV, bash.bashrc), login shells, and a
# shell that looked `guix` up before `guix pull` (the /usr/local/bin wrappers).
ENV PATH=/root/.config/guix/current/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
	BASH_ENV=/etc/guix-matrix/profile.sh
COPY scripts/profile.sh /etc/guix-matrix/profile.sh
COPY scripts/guix-wrapper.sh /usr/local/bin/guix
RUN ln -s guix /usr/local/bin/guix-daemon \
	&& ln -s /etc/guix-matrix/profile.sh /etc/profile.d/zz-guix-matrix.sh \
	&& echo '. /etc/guix-matrix/profile.sh' >>/etc/bash.bashrc

COPY scripts/pull-channels.scm /usr/local/lib/guix-matrix/pull-channels.scm
COPY scripts/pin-check.sh /usr/local/bin/guix-matrix-pin-check
COPY scripts/pull.sh /usr/local/bin/guix-pull.sh
COPY scripts/entry-point.sh /entry-point.sh
# Where the base came from (a registry digest, or the mmdebstrap inputs and
# rootfs digest), so the image can be traced to and rebuilt from it.
ARG BASE_PROVENANCE=""
LABEL io.guix-matrix.base="${BASE_PROVENANCE}" \
	org.opencontainers.image.title="guix-matrix" \
	org.opencontainers.image.description="GNU Guix for CI/CD: guix-daemon per command, a pinned channel, failed builds' logs printed" \
	org.opencontainers.image.licenses="Apache-2.0"
ENTRYPOINT ["/entry-point.sh"]
CMD ["sh"]
