"""chatsite.settings with the channel-layer change docs/performance.md proposes, to measure it:

    DATABASE_URL=postgres://... REDIS_URL=redis://... .venv/bin/python -m bench.concurrency \\
        --env DJANGO_SETTINGS_MODULE=bench.proposed_settings

channels-redis's default layer keeps every process's inbox in one Redis sorted set capped at 100
messages and drains it one message per round trip; past the cap it drops group messages without a
word and raises ChannelFull on direct sends. Its Redis connection pool (redis-py's default, 100)
raises MaxConnectionsError instead of waiting. The pub/sub layer pushes each message to the
subscribed processes, queues it in memory there, and needs no per-message polling.
"""

from chatsite.settings import *  # noqa: F403
from chatsite.settings import CHANNEL_LAYERS, REDIS_URL

if REDIS_URL:
    CHANNEL_LAYERS["default"]["BACKEND"] = "channels_redis.pubsub.RedisPubSubChannelLayer"
