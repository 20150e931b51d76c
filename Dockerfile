# Brain-tumour MRI inference service on CPU: ONNX Runtime serving + the Keras twin for Grad-CAM, bundled models.
#   docker build -t brain-mri .                                   # CPU (onnxruntime)
#   docker build -f Dockerfile.gpu -t brain-mri-gpu .             # CUDA (onnxruntime-gpu): see Dockerfile.gpu
# The install step is the one `make serve` runs (pip install '.[serve,gradcam]'), so CI exercises what the image does.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/venv
COPY pyproject.toml README.md ./
COPY service ./service
COPY exporter ./exporter
COPY training ./training
RUN /opt/venv/bin/pip install ".[serve,gradcam]"

FROM ${PYTHON_IMAGE}
RUN groupadd --gid 10001 mri && useradd --create-home --uid 10001 --gid 10001 --shell /usr/sbin/nologin mri
COPY --from=build /opt/venv /opt/venv
COPY --chown=10001:10001 models /srv/models
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    KERAS_BACKEND=tensorflow \
    MALLOC_ARENA_MAX=2 \
    MRI_GRADCAM_PRELOAD=true \
    MRI_MODEL_REPOSITORY=/srv/models \
    MRI_HOST=0.0.0.0 \
    MRI_PORT=8000
USER 10001:10001
WORKDIR /home/mri
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=90s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/health/ready', timeout=2).status != 200)"]
CMD ["python", "-m", "service"]
