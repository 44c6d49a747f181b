from tests.metadata.servers import redis_url, s3_endpoint

__all__ = ["redis_url", "s3_endpoint"]
