# Dataflow worker image for the label job: Beam's Python SDK image (the SDK harness Dataflow
# starts) plus CUDA torch, PyAV and daq-label. Its Beam and Python versions must be the ones the
# launcher runs (Dataflow refuses a different SDK version; pickled code needs the same Python):
# tests/test_dataflow_build.py checks BEAM_VERSION and PYTHON_VERSION below against pyproject.toml
# and the installed Beam.
#
#   docker build -t REGION-docker.pkg.dev/PROJECT/REPO/daq-label:0.1.0 .
#   docker push REGION-docker.pkg.dev/PROJECT/REPO/daq-label:0.1.0
#
# then pass --sdk_container_image with that name (docs/dataflow.md).
ARG PYTHON_VERSION=3.11
ARG BEAM_VERSION=2.78.0
FROM apache/beam_python${PYTHON_VERSION}_sdk:${BEAM_VERSION}
ARG BEAM_VERSION

# torch from PyPI: for Linux x86_64 the torch wheel is the CUDA build (its CUDA runtime comes as
# nvidia-* wheels; the NVIDIA driver is installed on the VM by Dataflow: install-nvidia-driver).
# The same pin as pyproject.toml.
RUN pip install --no-cache-dir "torch==2.13.0" "apache-beam[gcp]==${BEAM_VERSION}"

# daq-label and its dependencies (PyAV wheels bundle FFmpeg); Beam stays at the image's version.
COPY pyproject.toml README.md /opt/daq-label/
COPY daq_model /opt/daq-label/daq_model
COPY daq_train /opt/daq-label/daq_train
COPY daq_eval /opt/daq-label/daq_eval
COPY daq_label /opt/daq-label/daq_label
COPY pipeline /opt/daq-label/pipeline
COPY jobs /opt/daq-label/jobs
COPY schemas /opt/daq-label/schemas
RUN pip install --no-cache-dir "/opt/daq-label[dataflow]" "torch==2.13.0" "apache-beam[gcp]==${BEAM_VERSION}" \
    && python -c "import av, torch, pipeline.job, daq_model; print('daq-label image: torch', torch.__version__, 'av', av.__version__)"

# The Beam SDK image's entrypoint (/opt/apache/beam/boot) stays: Dataflow starts the harness.
