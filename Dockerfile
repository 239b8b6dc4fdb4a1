# imagegate: one process per container; run several behind a load balancer (see deploy/).
FROM python:3.11-slim

WORKDIR /app
COPY requirements.lock ./
RUN pip install --no-cache-dir -r requirements.lock
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install --no-cache-dir --no-deps . && useradd --system --uid 10001 imagegate \
    && mkdir -p /data/journal && chown -R imagegate /data
USER imagegate

# The journal lets a restarted container bill what a killed one delivered (keep /data/journal
# on a volume so that it outlives the container).
ENV IMAGEGATE_HOST=0.0.0.0 IMAGEGATE_PORT=8080 IMAGEGATE_JOURNAL_DIR=/data/journal
# Image-sized buffers come and go on every request: keep glibc from returning them to the
# kernel and faulting them back in each time (measured ~1 ms per request, docs/benchmarks.md).
ENV MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=33554432
EXPOSE 8080
CMD ["imagegate", "serve"]
