# remora as one executable in a small image.
#   docker build -t remora .
#   docker run --rm -p 15006:15006 -p 15021:15021 remora run --app-port 8080
# Build stage: `deno task compile` (deno.json) makes ./remora with the runtime
# flags remora needs (young generation, linear-time regexes) built in.
FROM denoland/deno:2.9.6 AS build
WORKDIR /src
COPY deno.json deno.lock ./
COPY main.ts ./
COPY src ./src
RUN deno install --frozen && deno task compile

# Runtime: iptables for `remora iptables install` (an init container, root with
# NET_ADMIN) and `run --capture`; curl for the health check.
FROM debian:bookworm-slim
RUN apt-get update \
  && apt-get install -y --no-install-recommends ca-certificates curl iptables \
  && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/remora /usr/local/bin/remora
# The proxy's uid: capture rules never redirect its own traffic (--proxy-uid, default 1337).
USER 1337:1337
# Outbound (explicit proxy, 127.0.0.1 unless --outbound-address), inbound, Prometheus, health.
EXPOSE 15001 15006 15020 15021
HEALTHCHECK --interval=5s --timeout=2s --retries=3 \
  CMD curl -fsS http://127.0.0.1:15021/healthz/ready || exit 1
ENTRYPOINT ["remora"]
CMD ["run"]
