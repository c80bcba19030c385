"""Settings of the evolutionary search (MetaPruning's, but for the share of random networks per generation)."""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import HwpruneError, check_number

FILL_RULES = ("proportion", "saliency")  # SearchConfig.fill_rule

__all__ = ["SearchConfig"]


@dataclass
class SearchConfig:
    population: int = 50
    keep_top: int = 50  # best candidates seen, kept across generations
    parents: int = 10  # top candidates that breed
    # each generation after the first (with ``ramp``, the second; ever more bred after it): ``mutations`` and
    # ``crossovers`` of the ``parents``, the rest random networks of the budget's window. MetaPruning bred all of it
    # (25 + 25 of 50); on Fashion-MNIST mobilenet_v2_cifar at 30% of the dense latency such a search (8 + 8 of 16, 7
    # generations) ended on a network its evaluator scored 0.7598 where the best of 112 random networks scored 0.7725:
    # bred only from the fittest, it stayed where generation 1 landed. With a quarter of each generation mutations, a
    # quarter crossovers and half random it reached 0.7803 (at 50%: 0.8174, where the bred search had found 0.8242 and
    # random 0.8066; one run each, benchmarks/search_exploration.py). In the Fashion-MNIST benchmark the picks
    # fine-tuned +1.55 / +0.26 points higher than the bred search's on mobilenet_v2_cifar at 30% / 50% and +0.29 / -0.20
    # on resnet20 (README, Results)
    mutations: int = 12
    crossovers: int = 12
    mutation_prob: float = 0.1  # per gene
    # share of the mutated genes that move one or two choices from the parent's (a width is ordinal: the next
    # choices are the nearest networks) instead of being drawn again from all of them; 0 is MetaPruning's redraw.
    # On Fashion-MNIST resnet20 at 50% of the dense latency searches (32 x 10, a quarter mutations) ended on fitness
    # 0.8213, 0.8423 and 0.8423 with seeds 0-2 at 0, on 0.8472, 0.8364 and 0.8408 at 0.5 (benchmarks/
    # search_exploration.py --local-share 0.5 --search-seeds 0 1 2, results/search_exploration_local.csv); in the
    # benchmark 0.5 moved the default path's picks +0.10 / +0.36 points on resnet20 at 30% / 50% and -1.25 / -0.38
    # on mobilenet_v2_cifar: within one search's spread, so the default stays MetaPruning's (README, Results)
    local_share: float = 0.0
    # the bred share grows from ``mutations + crossovers`` in the second generation to the whole generation in the
    # last (their ratio kept; the random networks fall linearly to none): explore first, then refine the fittest.
    # False: the same share throughout. On Fashion-MNIST resnet20 at 50% of the dense latency four searches (32 x 10,
    # search seeds 0-3) ended on fitness 0.8481 / 0.8369 / 0.8418 / 0.8413 with it, 0.8384 / 0.8257 / 0.8447 /
    # 0.8286 without, and their picks fine-tuned to a mean 0.8819 against 0.8797 (benchmarks/search_variance.py)
    ramp: bool = True
    generations: int = 20
    calib_batches: int = 10  # BatchNorm recalibration batches per candidate
    val_batches: int | None = None  # limit validation batches per candidate (None: all)
    seed: int = 0
    max_draws: int = 200_000  # random encodings tried when filling a population before giving up
    # candidates must use at least this share of the budget (its latency, else FLOPs, else params): a network
    # well under the budget leaves speed unused, and a noisy fitness would otherwise pick one; 0 is
    # MetaPruning's original (any network under the budget)
    min_fraction: float = 0.9
    # the first generation holds the budget's uniform, magnitude and saliency networks (the baselines the result
    # reports), so the search starts from what a user would otherwise do and never returns a network less fit than
    # them
    seed_baselines: bool = True
    # after this many generations of a latency budget, time its ``steer_top`` fittest candidates on the machine and
    # ask the table from then on for what it predicts for them at the budget as measured (``search(measure=...)``;
    # 0: never). The search keeps the candidates the table under-predicts, and where that error differs from the
    # rest of the space it spends its generations over the budget: resnet20's fittest at 50% of the dense latency
    # measured 4% over their prediction, random networks there 5% under
    steer_after: int = 0
    steer_top: int = 8
    # processes that score a generation's candidates, one torch thread each (forked from this one, Linux; 1: here,
    # on torch's threads; None: one per core this process may run on for a network of at most
    # evaluator.FORK_MAX_MACS per image, else here, and here where it cannot fork: on a GPU, or with loaders that
    # start processes of their own). Small networks share little work between threads: on a 2-core CPU
    # two 1-thread processes scored 1.21-1.40x the candidates one 2-thread process did
    # (benchmarks/scoring_workers.py). Every candidate gets the score one thread gives it, on any number of cores
    # (more threads sum floats in another order: on Fashion-MNIST resnet20 one validation image in 2,048 scored
    # otherwise); under torchrun the ranks split the candidates instead. Until 2026-12-05 1
    workers: int | None = None
    # after the last generation, widen each budget's winner toward the budget, one group one width at a time while
    # the table keeps it within (:mod:`.fill`: its proportions kept, a dropped block left dropped), every step kept
    # for meeting the budget as measured; the widest is the winner. False: the fittest candidate as scored. On
    # Fashion-MNIST resnet20 at 50% of the dense latency the same search's pick measured 99.4% of the budget filled,
    # 96.8% not, and fine-tuned to 0.8800 against 0.8785 (one search, 3 seeds; benchmarks/results/
    # fashion_mnist_resnet20_fill.* and _nofill.*)
    fill: bool = True
    # how the fill picks the group to widen (:mod:`.fill`): "proportion", the group grown least relative to the
    # winner's width; "saliency", the one whose added channels bring the most Taylor saliency (of the dense model)
    # per ms the table adds (the inherit evaluator's estimates, as the latency-saliency baseline spends the budget)
    fill_rule: str = "proportion"

    def __post_init__(self):
        for name in ("population", "keep_top", "max_draws", "steer_top"):
            check_number(name, getattr(self, name), integer=True, minimum=1, inclusive=True)
        check_number("workers", self.workers, integer=True, minimum=1, inclusive=True, optional=True)
        for name in ("parents", "mutations", "crossovers", "generations", "calib_batches", "seed", "steer_after"):
            check_number(name, getattr(self, name), integer=True, inclusive=True)
        check_number("mutation_prob", self.mutation_prob, inclusive=True, maximum=1)
        check_number("local_share", self.local_share, inclusive=True, maximum=1)
        check_number("min_fraction", self.min_fraction, inclusive=True, maximum=1)
        check_number("val_batches", self.val_batches, integer=True, minimum=1, inclusive=True, optional=True)
        if self.fill_rule not in FILL_RULES:
            raise HwpruneError(f"fill_rule must be one of {', '.join(FILL_RULES)}, got {self.fill_rule!r}")
