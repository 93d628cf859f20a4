"""kvproxy: Kvrocks backups to S3, GCS and Azure behind a transparent RESP proxy."""

__version__ = "0.1.0"
