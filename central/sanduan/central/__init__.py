"""The central collector: ingest, storage, assessment, compensation, reports."""
