"""(interim) prepared data access."""
from pathlib import Path
import numpy as np

def load_blocks(data_dir, split):
    return np.load(Path(data_dir) / f"{split}.npy", mmap_mode="r")
