# syntax=docker/dockerfile:1
#
# hti-guard container image: a --locked release build on Debian 12 (bookworm), run on
# distroless/cc-debian12 (glibc and libgcc_s, CA certificates; no shell, no package manager)
# as the non-root user 65532.
#
# Build:  docker build -t hti-guard .
# Run:    docker run -p 8080:8080 -p 9090:9090 \
#           -v "$PWD/my-config.toml:/etc/hti-guard/config.toml:ro" hti-guard
# No configuration is baked in: mount one at $HTI_GUARD_CONFIG (the helm chart does, from a
# ConfigMap). HTI_GUARD_<KEY> environment variables override it.
#
# The build stage's steps are checked without Docker by docker/verify-build-steps.sh, which
# reads this file, runs its COPY and RUN steps in a scratch directory and checks the binary
# against what the runtime image provides. Keep RUN steps free of absolute paths so that
# script can replay them.

# The slim image: its gcc is all that aws-lc-sys (the only C in the build) needs; nothing
# builds OpenSSL, so neither perl nor make is wanted.
FROM rust:1.95-slim-bookworm AS build
WORKDIR /build

# Dependencies first, compiled against placeholder sources: this layer is reused as long as
# Cargo.toml, Cargo.lock, build.rs, symbol-order.txt (the linker's function order, which
# build.rs hands to the linker) and .cargo/config.toml (the symbol names that file uses) do
# not change. (benches/verify.rs must exist: Cargo.toml declares it. No .git is copied:
# `hti-guard --version` says revision "unknown".)
COPY Cargo.toml Cargo.lock build.rs symbol-order.txt ./
COPY .cargo .cargo
RUN mkdir -p src benches \
    && echo 'fn main() {}' > src/main.rs \
    && : > src/lib.rs \
    && echo 'fn main() {}' > benches/verify.rs \
    && cargo build --release --locked \
    && rm -rf src benches

COPY src src
COPY benches benches
# The placeholders were written after the real sources' mtime: touch them so that cargo
# rebuilds the crate itself instead of keeping the placeholder binary.
RUN touch src/main.rs src/lib.rs \
    && cargo build --release --locked \
    && ./target/release/hti-guard --version

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /build/target/release/hti-guard /usr/local/bin/hti-guard
ENV HTI_GUARD_CONFIG=/etc/hti-guard/config.toml
USER 65532:65532
EXPOSE 8080 9090
ENTRYPOINT ["/usr/local/bin/hti-guard"]
CMD ["serve"]
