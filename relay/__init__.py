"""The relay: LISTEN/poll loop, fan-out, signed delivery with durable retries."""
