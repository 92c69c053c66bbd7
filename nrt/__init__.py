"""Near-real-time z_u: events (HTTP or Redis streams) -> per-user state -> the batch feature
definitions -> every servable batch's encoder -> z_u online and offline (see README.md)."""
