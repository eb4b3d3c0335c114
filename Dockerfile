# The serving container of an exported DFD detector (serving_dfd.py): the Inference Endpoints protocol on port 80,
# concurrent requests' windows batched on the GPU. Build it in the exported folder, which this file is part of:
#
#   docker build -t dfd-endpoint .
#   docker run --gpus all -p 8080:80 dfd-endpoint          # --gpus all: leave it out to run on the CPU
#   curl localhost:8080/health
#
# On Inference Endpoints (custom container): this image, port 80, health route /health; the Endpoint puts the model
# repository at /repository, where this image keeps its own copy. The base image brings torch (>= 2.6, with CUDA, and
# torchvision); any other image with Python >= 3.10 and torch can replace it: --build-arg BASE_IMAGE=...
# Everything the server loads is in the folder: it never calls the Hub (HF_HUB_OFFLINE=1).
ARG BASE_IMAGE=pytorch/pytorch:2.8.0-cuda12.8-cudnn9-runtime
FROM ${BASE_IMAGE}

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HUB_DISABLE_TELEMETRY=1 \
    HF_HUB_OFFLINE=1

COPY requirements.txt /tmp/requirements.txt
RUN pip install -r /tmp/requirements.txt

COPY . /repository
WORKDIR /repository
EXPOSE 80
CMD ["python", "serving_dfd.py", "--model", "/repository", "--host", "0.0.0.0", "--port", "80"]
