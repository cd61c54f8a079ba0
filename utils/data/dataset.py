"""Datasets the YOLOv5 way: data YAML → image files → verified labels (cached) → batches.

Bad samples are reported one line each and skipped, so one broken file never stops a training run;
only a dataset with nothing usable left is fatal. The label cache is a numpy .npz read with
allow_pickle=False and trusted only if its version and the hash of the file list match.
"""
from __future__ import annotations

import os
from collections import OrderedDict
from multiprocessing.pool import ThreadPool
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from tqdm import tqdm

from deploy.errors import UserInputError
from utils.core.boxes import xywhn_to_xyxy, xyxy_to_xywhn
from utils.core.files import atomic_file
from utils.core.log import LOGGER
from utils.core.torch_utils import LOADER_STREAM, epoch_seed, init_seeds
from utils.core.yaml_io import read_yaml_mapping
from utils.data import augment
from utils.data.labels import image_to_label_path, scan_labels, short_error
from utils.data.sampling import ImageWeightSampler, class_frequency_weights, per_image_weights

IMG_FORMATS = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
SPLITS = ("train", "val", "test")


# ----------------------------------------------------------------------------------------- data YAML
def check_dataset(path: str | Path) -> dict:
    """Load and validate a YOLOv5 data YAML; return it with absolute split paths, names list and nc.

    Each of train/val/test may be a folder, a .txt list of images, an image, or a list of those;
    relative entries resolve against `path:` which itself resolves against the YAML's folder.
    """
    yaml_file = Path(path)
    if not yaml_file.is_file():
        raise UserInputError(f"{path}: data YAML not found")
    data = read_yaml_mapping(yaml_file, str(yaml_file), "expected a mapping with train/val/names keys")
    missing = [k for k in ("train", "val") if not data.get(k)]
    if "names" not in data and "nc" not in data:
        missing.append("names")
    if missing:
        raise UserInputError(f"{yaml_file}: missing key(s) {', '.join(missing)}")

    names = _parse_names(data.get("names"), data.get("nc"), yaml_file)
    root = Path(str(data.get("path") or "")).expanduser()
    if not root.is_absolute():
        root = (yaml_file.parent / root).resolve()
    out = dict(data)
    for split in SPLITS:
        entry = data.get(split)
        if not entry:
            out[split] = None
            continue
        entries = entry if isinstance(entry, list) else [entry]
        resolved = []
        for e in entries:
            p = Path(str(e)).expanduser()
            p = p if p.is_absolute() else root / p
            if not p.exists():
                raise UserInputError(f"{yaml_file}: {split} path '{e}' does not exist (looked for {p})")
            resolved.append(str(p.resolve()))
        out[split] = resolved
    out.update(names=names, nc=len(names), yaml_file=str(yaml_file.resolve()), path=str(root))
    return out


def _parse_names(names: object, nc: object, yaml_file: Path) -> list[str]:
    """names may be a list or {id: name} with ids 0..n-1; nc (if given) must agree."""
    if nc is not None and (not isinstance(nc, int) or isinstance(nc, bool) or nc < 1):
        raise UserInputError(f"{yaml_file}: nc must be a positive integer, got {nc!r}")
    if names is None:
        return [f"class{i}" for i in range(nc)]
    if isinstance(names, dict):
        try:
            ids = sorted(int(k) for k in names)
        except (TypeError, ValueError):
            raise UserInputError(f"{yaml_file}: names keys must be integer class ids") from None
        if ids != list(range(len(ids))):
            raise UserInputError(f"{yaml_file}: names ids must be 0..{len(ids) - 1} without gaps")
        names = [names[k] if k in names else names[str(k)] for k in ids]
    if not isinstance(names, list) or not names:
        raise UserInputError(f"{yaml_file}: names must be a non-empty list or {{id: name}} mapping")
    if nc is not None and nc != len(names):
        raise UserInputError(f"{yaml_file}: nc is {nc} but names lists {len(names)} classes")
    return [str(n) for n in names]


def single_cls_names(names: list[str]) -> list[str]:
    """The one class name under --single-cls (train and val alike): a data YAML's only name stays, as yolov5
    keeps it; several names merged into one become 'item'."""
    return list(names) if len(names) == 1 else ["item"]


# ------------------------------------------------------------------------------------ file discovery
def find_image_files(sources: str | Path | list) -> list[str]:
    """Images under folders (recursive, extension case-insensitive), in .txt lists, or given directly."""
    sources = sources if isinstance(sources, (list, tuple)) else [sources]
    files: list[str] = []
    for src in sources:
        p = Path(src)
        if p.is_dir():
            files += [str(f) for f in p.rglob("*") if f.suffix.lower() in IMG_FORMATS and f.is_file()]
        elif p.is_file() and p.suffix.lower() == ".txt":
            for line in p.read_text(encoding="utf-8", errors="replace").splitlines():
                line = line.strip()
                if line:
                    f = Path(line)
                    files.append(str(f if f.is_absolute() else (p.parent / f).resolve()))
        elif p.is_file() and p.suffix.lower() in IMG_FORMATS:
            files.append(str(p))
        else:
            raise UserInputError(f"{src}: not an image folder, image list (.txt) or image file")
    return sorted(set(f for f in files if Path(f).suffix.lower() in IMG_FORMATS))


class YOLODataset(Dataset):
    """Verified images + labels; yields (img uint8 CHW RGB, labels (n,6), path, shapes) per sample."""

    def __init__(
        self,
        path: str | list,
        imgsz: int = 640,
        batch_size: int = 16,
        augment: bool = False,
        hyp: dict | None = None,
        rect: bool = False,
        cache: str | None = None,
        single_cls: bool = False,
        stride: int = 32,
        pad: float = 0.0,
        prefix: str = "",
        nc: int = 80,
        seed: int = 0,
        workers: int = 2,
        rank: int = -1,
    ):
        self.imgsz = imgsz
        self.augment = augment
        self.hyp = hyp or {}
        self.rect = rect
        self.stride = stride
        self.seed, self.rank = seed, rank
        # the epoch being loaded, in shared memory: persistent loader workers hold their own copy of the
        # dataset, and this is how set_epoch in the main process reaches them
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()
        self.mosaic = augment and not rect and self.hyp.get("mosaic", 0) > 0
        self.mosaic_border = (-imgsz // 2, -imgsz // 2)
        self._rng_key: tuple | None = None
        self._rng: np.random.Generator | None = None
        self._recent: OrderedDict[int, tuple] = OrderedDict()

        im_files = find_image_files(path)
        if not im_files:
            raise UserInputError(f"{prefix}{path}: no images found (looked for {', '.join(sorted(IMG_FORMATS))})")
        label_files = [image_to_label_path(f) for f in im_files]
        self.im_files, self.labels, self.shapes, self.report = scan_labels(
            im_files, label_files, None if single_cls else nc, prefix, workers)
        self.label_files = [image_to_label_path(f) for f in self.im_files]
        if single_cls:
            for lb in self.labels:
                lb[:, 0] = 0
        self.batch_shapes = None
        if rect:
            self._sort_for_rect(batch_size, pad)

        self.ims: list[np.ndarray | None] = [None] * len(self.im_files)
        # recently decoded images per worker, a decode cache only: an image drawn again soon (a mosaic partner,
        # the next epoch on a small set) is not decoded again; bounded like the ultralytics package's buffer
        self.recent_size = min(len(self), batch_size * 8, 1000) if self.mosaic else 0
        self.npy_files = [str(Path(f).with_suffix(".npy")) for f in self.im_files]
        self.cache = cache
        if cache:
            self._cache_images(cache, prefix)

    def __len__(self) -> int:
        return len(self.im_files)

    def _sort_for_rect(self, batch_size: int, pad: float) -> None:
        """Sort by aspect ratio so each batch shares one small letterbox shape (a stride multiple)."""
        ar = self.shapes[:, 1] / self.shapes[:, 0]  # h / w
        order = ar.argsort()
        self.im_files = [self.im_files[i] for i in order]
        self.labels = [self.labels[i] for i in order]
        self.shapes = self.shapes[order]
        ar = ar[order]
        bi = np.arange(len(ar)) // batch_size
        shapes = []
        for b in range(bi[-1] + 1):
            ari = ar[bi == b]
            lo, hi = ari.min(), ari.max()
            shapes.append([hi, 1] if hi < 1 else [1, 1 / lo] if lo > 1 else [1, 1])
        self.batch_shapes = (np.ceil(np.array(shapes) * self.imgsz / self.stride + pad) * self.stride).astype(int)
        self.batch_index = bi

    def _cache_images(self, cache: str, prefix: str) -> None:
        """'ram' keeps resized images in memory; 'disk' writes full-size .npy beside each image."""
        if cache not in ("ram", "disk"):
            raise UserInputError(f"--cache: expected 'ram' or 'disk', got {cache!r}")
        fn = self._cache_to_disk if cache == "disk" else self._decode_resized
        nbytes = 0
        with ThreadPool(min(8, os.cpu_count() or 1)) as pool:
            for i, x in enumerate(tqdm(pool.imap(fn, range(len(self))), total=len(self),
                                       desc=f"{prefix}Caching images ({cache})")):
                if cache == "ram":
                    self.ims[i] = x[0]
                    nbytes += x[0].nbytes
        if cache == "ram":
            LOGGER.info(f"{prefix}cached {len(self)} images in RAM ({nbytes / 1e9:.2f} GB)")

    def _npy_is_current(self, i: int) -> bool:
        npy = self.npy_files[i]
        return os.path.isfile(npy) and os.stat(npy).st_mtime_ns >= os.stat(self.im_files[i]).st_mtime_ns

    def _cache_to_disk(self, i: int) -> None:
        f = Path(self.npy_files[i])
        if not self._npy_is_current(i):
            try:
                with atomic_file(f) as out:  # an interrupted --cache disk leaves no partial .npy to trust
                    np.save(out, self._read(self.im_files[i]), allow_pickle=False)
            except OSError as e:
                LOGGER.warning(f"WARNING: {f}: image cache not written ({short_error(e)})")

    @staticmethod
    def _read(path: str) -> np.ndarray:
        im = cv2.imread(path, cv2.IMREAD_COLOR)  # applies EXIF orientation, drops alpha, 16→8 bit
        if im is None:
            raise UserInputError(f"{path}: image could not be decoded by OpenCV")
        return im

    def load_image(self, i: int) -> tuple[np.ndarray, tuple[int, int], tuple[int, int]]:
        """Image i (BGR) resized so its long side is imgsz; returns it, (h0, w0) and (h, w)."""
        im = self.ims[i]
        if im is not None:
            w0, h0 = self.shapes[i]
            return im, (int(h0), int(w0)), im.shape[:2]
        if i in self._recent:
            self._recent.move_to_end(i)
            return self._recent[i]
        out = self._decode_resized(i)
        if self.recent_size:
            self._recent[i] = out
            if len(self._recent) > self.recent_size:
                self._recent.popitem(last=False)
        return out

    def _decode_resized(self, i: int) -> tuple[np.ndarray, tuple[int, int], tuple[int, int]]:
        use_npy = self.cache == "disk" and self._npy_is_current(i)
        im = np.load(self.npy_files[i], allow_pickle=False) if use_npy else self._read(self.im_files[i])
        h0, w0 = im.shape[:2]
        r = self.imgsz / max(h0, w0)
        if r != 1:
            interp = cv2.INTER_LINEAR if (self.augment or r > 1) else cv2.INTER_AREA
            im = cv2.resize(im, (max(1, round(w0 * r)), max(1, round(h0 * r))), interpolation=interp)
        return im, (h0, w0), im.shape[:2]

    def set_epoch(self, epoch: int) -> None:
        """Augment as epoch `epoch` (see `rng`); call before iterating a loader over this dataset."""
        self._epoch.fill_(epoch)

    @property
    def rng(self) -> np.random.Generator:
        """This epoch's augmentation stream in this loader process, seeded by (seed, epoch, rank, worker).

        So an epoch augments the same whether the run got there uninterrupted or by --resume. In a worker a
        new stream also reseeds the global RNGs by the same rule, in case anything draws from them.
        """
        info = torch.utils.data.get_worker_info()
        worker = info.id if info else 0
        key = (os.getpid(), int(self._epoch), worker)
        if key != self._rng_key:
            seed = epoch_seed(self.seed, key[1], self.rank, LOADER_STREAM + worker)
            self._rng_key, self._rng = key, np.random.default_rng(seed)
            if info is not None:
                init_seeds(seed)
        return self._rng

    def __getitem__(self, index: int):
        rng, hyp = self.rng, self.hyp
        if self.mosaic and rng.random() < hyp.get("mosaic", 0):
            im, labels = self._load_mosaic(index, rng)
            shapes = None
            if rng.random() < hyp.get("mixup", 0):
                im2, labels2 = self._load_mosaic(int(rng.integers(len(self))), rng)
                im, labels = augment.mixup(im, labels, im2, labels2, rng)
        else:
            im, (h0, w0), (h, w) = self.load_image(index)
            shape = self.batch_shapes[self.batch_index[index]] if self.rect else self.imgsz
            im, (rx, ry), (padw, padh) = augment.letterbox(im, shape, auto=False, scaleup=self.augment)
            shapes = ((h0, w0), ((h * ry / h0, w * rx / w0), (padw, padh)))
            lb = self.labels[index]
            labels = np.concatenate((lb[:, :1], xywhn_to_xyxy(lb[:, 1:], rx * w, ry * h, padw, padh)), 1)
            if self.augment:
                im, labels = augment.random_perspective(im, labels, rng, **self._affine_hyp())

        boxes_n = xyxy_to_xywhn(labels[:, 1:5], im.shape[1], im.shape[0], clip=True)
        labels_n = np.concatenate((labels[:, :1], boxes_n), 1)
        if self.augment:
            augment.augment_hsv(im, rng, hyp.get("hsv_h", 0), hyp.get("hsv_s", 0), hyp.get("hsv_v", 0))
            if rng.random() < hyp.get("flipud", 0):
                im, labels_n = augment.flip_ud(im, labels_n)
            if rng.random() < hyp.get("fliplr", 0):
                im, labels_n = augment.flip_lr(im, labels_n)

        out = torch.zeros((len(labels_n), 6))
        out[:, 1:] = torch.from_numpy(labels_n.astype(np.float32))
        img = np.stack(cv2.split(im)[::-1])  # HWC BGR → CHW RGB (2x faster than a transposed copy)
        return torch.from_numpy(img), out, self.im_files[index], shapes

    def _affine_hyp(self) -> dict:
        keys = ("degrees", "translate", "scale", "shear", "perspective")
        return {k: self.hyp.get(k, 0.0) for k in keys}

    def _load_mosaic(self, index: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Mosaic of this image + 3 others drawn from the whole set (YOLOv5's rule), then the random affine that
        crops it to imgsz.

        Not from the images decoded lately: that pool depends on what came before, so it cannot be replayed by
        --resume unless emptied each epoch — and emptied, it held a handful of images at each epoch's start, so
        the first mosaics of every epoch repeated the same few pictures.
        """
        indices = [index, *(int(i) for i in rng.integers(len(self), size=3))]
        ims, lbs = [], []
        for i in indices:
            im, _, (h, w) = self.load_image(i)
            lb = self.labels[i]
            ims.append(im)
            lbs.append(np.concatenate((lb[:, :1], xywhn_to_xyxy(lb[:, 1:], w, h)), 1))
        canvas, labels = augment.mosaic4(ims, lbs, self.imgsz, rng)
        return augment.random_perspective(canvas, labels, rng, border=self.mosaic_border, **self._affine_hyp())

    @staticmethod
    def collate_fn(batch: list) -> tuple[torch.Tensor, torch.Tensor, list[str], list]:
        """Stack images; targets get their image index in column 0."""
        imgs, labels, paths, shapes = zip(*batch)
        for i, lb in enumerate(labels):
            lb[:, 0] = i
        return torch.stack(imgs, 0), torch.cat(labels, 0), list(paths), list(shapes)


# ---------------------------------------------------------------------------------------- dataloader
def _worker_init(worker_id: int) -> None:
    """OpenCV's own thread pool inside every loader worker just oversubscribes the cores."""
    cv2.setNumThreads(0)


def create_dataloader(
    path: str | list,
    imgsz: int,
    batch_size: int,
    stride: int,
    hyp: dict | None = None,
    augment: bool = False,
    cache: str | None = None,
    pad: float = 0.0,
    rect: bool = False,
    rank: int = -1,
    workers: int = 8,
    shuffle: bool = False,
    seed: int = 0,
    single_cls: bool = False,
    prefix: str = "",
    nc: int = 80,
    image_weights: bool = False,
) -> tuple[DataLoader, YOLODataset]:
    """Build the dataset and a seeded DataLoader (DistributedSampler when rank != -1 or shuffling; an
    ImageWeightSampler, rare classes first, with `image_weights`, sharded per rank under DDP; train.py
    reweights it every epoch).

    `batch_size` is per process. Same seed → same batches (shuffle order, mosaic picks, augment draws);
    call `set_loader_epoch(loader, epoch)` before each epoch: order and augmentation are functions of
    (seed, epoch, rank), never of how many epochs this process has loaded. Workers are persistent, so
    epochs after the first start without a fork.
    """
    if workers < 0:
        raise UserInputError(f"--workers {workers}: must be 0 (load in the main process) or more")
    if rect and shuffle:
        LOGGER.warning(f"{prefix}WARNING: --rect is incompatible with shuffle, shuffle disabled")
        shuffle = False
    ndev = max(torch.cuda.device_count(), 1)
    nw = min((os.cpu_count() or 1) // ndev, batch_size if batch_size > 1 else 0, workers)
    distributed = rank != -1  # the process group must exist, as for DistributedSampler
    global_rank = dist.get_rank() if distributed else -1  # `rank` is the local one: it repeats across nodes
    dataset = YOLODataset(path, imgsz, batch_size, augment=augment, hyp=hyp, rect=rect, cache=cache,
                          single_cls=single_cls, stride=stride, pad=pad, prefix=prefix, nc=nc, seed=seed,
                          workers=max(nw, 1), rank=global_rank)
    batch_size = min(batch_size, len(dataset))
    if image_weights:
        world_size = dist.get_world_size() if distributed else 1
        sampler = ImageWeightSampler(per_image_weights(dataset.labels, class_frequency_weights(dataset.labels, nc)),
                                     seed=seed, rank=global_rank, world_size=world_size)
    elif distributed:
        sampler = DistributedSampler(dataset, shuffle=shuffle, seed=seed)
    else:  # one replica: its shuffle is a function of (seed, epoch), unlike a RandomSampler's running generator
        sampler = DistributedSampler(dataset, num_replicas=1, rank=0, shuffle=True, seed=seed) if shuffle else None
    generator = torch.Generator()
    generator.manual_seed(seed + max(rank, 0))
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        num_workers=nw,
        sampler=sampler,
        pin_memory=torch.cuda.is_available(),
        collate_fn=YOLODataset.collate_fn,
        worker_init_fn=_worker_init,
        persistent_workers=nw > 0,
        generator=generator,
    )
    return loader, dataset


def set_loader_epoch(loader: DataLoader, epoch: int) -> None:
    """Point a create_dataloader loader's sample order and augmentation at `epoch` (before iterating it)."""
    if hasattr(loader.sampler, "set_epoch"):
        loader.sampler.set_epoch(epoch)
    loader.dataset.set_epoch(epoch)
