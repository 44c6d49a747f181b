from tests.metadata.servers import redis_url

__all__ = ["redis_url"]
