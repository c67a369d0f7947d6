import hashlib

from conveyor import File


def run(f: File) -> str:
    """The sha256 of a file input, read a MiB at a time."""
    digest = hashlib.sha256()
    with open(f, "rb") as source:
        while piece := source.read(1 << 20):
            digest.update(piece)
    return digest.hexdigest()
