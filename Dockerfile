FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY kvproxy ./kvproxy
RUN pip install --no-cache-dir .
EXPOSE 6667
CMD ["kvproxy", "--conf", "/etc/kvcloud/kvcloud.conf"]
