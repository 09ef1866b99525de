# Copyright 2026 The ECLIP for transformers authors. Licensed under the Apache License, Version 2.0.
"""Zero-shot evaluation of an exported checkpoint on a catalogue split, printed as the paper's Tables 1-4:
`python -m modeling_eclip.evaluation` as a script.

    python examples/evaluate_eclip.py --model outputs/eclip-demo --data data/demo
    python examples/evaluate_eclip.py --model outputs/eclip-demo --data data/demo --compare outputs/clip-demo \\
        --output results.json --tsne tsne.png
"""

from modeling_eclip.evaluation.cli import main

if __name__ == "__main__":
    main()
