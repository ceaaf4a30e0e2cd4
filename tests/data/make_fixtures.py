"""Rebuilds the test fixtures from the shared development archives (run once; output is committed).

    python tests/data/make_fixtures.py --shared ../shared/data

NIH: two images per (group, label) cell where available, one image per patient
(NIH terms allow redistribution with attribution). COVID: images with lung masks
whose per-image licence is CC BY 3.0 / 4.0 only.
"""

import argparse
import pathlib

import numpy as np

from jaxcxr import data

HERE = pathlib.Path(__file__).parent


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--shared", default=str(HERE.parents[2] / "shared" / "data"))
  args = parser.parse_args()
  shared = pathlib.Path(args.shared)

  nih = np.load(shared / "nih_cxr14_subset_256.npz", allow_pickle=False)
  groups = data.group_indices(nih["age"], nih["sex"])
  chosen, patients = [], set()
  for g in range(len(data.GROUPS)):
    for label in (0, 1):
      cell = []
      for i in np.flatnonzero((groups == g) & (nih["label"] == label)):
        if nih["patient_id"][i] not in patients and len(cell) < 2:
          cell.append(i)
          patients.add(nih["patient_id"][i])
      chosen += cell
  keys = ["images", "label", "sex", "age", "patient_id", "view", "source_id"]
  np.savez_compressed(HERE / "nih_fixture.npz", **{k: nih[k][chosen] for k in keys})

  covid = np.load(shared / "covid_v7lungs_256.npz", allow_pickle=False)
  ok = np.flatnonzero(np.isin(covid["license"], ["CC BY 3.0", "CC BY 4.0"]))
  picked, seen = [], set()
  for i in ok:
    if covid["patient_id"][i] not in seen:
      picked.append(i)
      seen.add(covid["patient_id"][i])
    if len(picked) == 8:
      break
  keys = ["images", "lung_masks", "label", "sex", "age", "patient_id", "view", "license", "source_id"]
  np.savez_compressed(HERE / "covid_fixture.npz", **{k: covid[k][picked] for k in keys})
  print(f"nih: {len(chosen)} images, covid: {len(picked)} images")


if __name__ == "__main__":
  main()
