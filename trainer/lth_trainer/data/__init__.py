"""The trainer's data: the shard index (index), the crops (crops), batches and the loader
whose workers decode them (loader), and the batches on the device (device)."""
