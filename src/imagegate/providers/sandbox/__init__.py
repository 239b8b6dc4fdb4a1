"""The built-in sandbox provider (slug ``imagegate``): a real, offline, deterministic image
synthesizer for building apps against the API without an upstream or a bill.

It draws abstract pictures — a gradient background, a soft glow, grain, and shapes — whose
look follows the request:

* **prompt**: a hash of the prompt picks the palette scheme, the gradient and the shape
  kinds; colour words ("a *red* circle") become the dominant colours (a colour word next to
  "background"/"sky" or after "on"/"over"/"against" becomes the background) and shape words
  (circle, square, triangle, star, stripes, grid, ring, hexagon, diamond, dots ...) pick the
  shapes, the first one drawn large ("hero") near the centre;
* **seed**: positions, sizes and rotations come from ``(seed, prompt, image index,
  references)``, so the same request is byte-identical, another seed or index differs, and
  ``seed=None`` draws a fresh seed per call;
* **references**: each is shrunk in the worker thread (``draft`` + ``thumbnail``); its mean and
  dominant colours join the palette (as the base palette when the prompt names no colour) and
  up to :data:`.scene.MAX_REFERENCE_TILES` framed thumbnails are pasted bottom right;
* **quality**: more shapes, supersampling, outlines and grain at higher levels;
* **size / n / output_format / output_compression / background**: exact pixels, ``n``
  different images, png/jpeg/webp through :func:`imagegate.imaging.encode`, or SVG markup of
  the same scene; ``transparent`` leaves the background fully transparent (shapes opaque).
  A margin of :data:`.scene.INSET` of each edge is kept free of shapes, so corners are
  background.
* **stream**: two previews per image before it (a blocky one, then a blurred one, encoded like
  the final image) or, for SVG, the markup in ``draft`` text chunks;
* **options** (``job.options``): ``latency_ms``, ``fail`` and ``fail_rate`` inject latency and
  failures (see :data:`.provider.FAIL_MODES`); unknown keys are ignored, wrong types are a 400.
  An operator's catalog can give an endpoint default options under ``settings.options`` (a
  sandbox endpoint that is always slow or always failing, for testing clients and fallbacks);
  the request's own options win.

Usage is computed, not invented: 1 MP = 1024x1024 px, one image token per started 1024 px,
one text token per started 4 prompt characters.

All pixel work runs on :data:`imagegate.imaging.EXECUTOR`: a 1024x1024 PNG takes well under
a second, and 4096x4096 (drawn at about 4 MP, then resized) a couple of seconds.

The package by job: :mod:`.scene` composes what to draw (palette, shapes, reference tiles) as
a pure function of the request, :mod:`.raster` and :mod:`.svg` render a scene, and
:mod:`.provider` turns a job into events (options, injected faults, usage, worker threads).
"""

from imagegate.providers.sandbox.provider import SandboxProvider

__all__ = ["SandboxProvider"]
