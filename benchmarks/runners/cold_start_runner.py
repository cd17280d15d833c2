"""Cold start of modelkiln.runtime in this fresh process: import + `pipeline(...)` + the first token of the prompt
(what a restarted service pays before its first answer). Prints one JSON line: {"cold_start_s", "import_s",
"load_s", "first_token_s"}. Protocol as the other runners: `python cold_start_runner.py MODEL_DIR PROMPT_IDS N`."""

import json
import time

t0 = time.perf_counter()
import sys  # noqa: E402

import numpy as np  # noqa: E402

from modelkiln.runtime import pipeline  # noqa: E402
from modelkiln.runtime.generation import generate  # noqa: E402

t_import = time.perf_counter()
model_dir, prompt_ids = sys.argv[1], json.loads(sys.argv[2])
pipe = pipeline("text-generation", model=model_dir)
t_load = time.perf_counter()
ids = np.array([prompt_ids])
generate(pipe.model, ids, np.ones_like(ids), pipe.generation_config(max_new_tokens=1, do_sample=False))
t_first = time.perf_counter()
print(json.dumps({"cold_start_s": t_first - t0, "import_s": t_import - t0, "load_s": t_load - t_import,
                  "first_token_s": t_first - t_load}))
