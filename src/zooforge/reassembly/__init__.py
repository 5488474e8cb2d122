"""DeRy reassembly: cut backbones into blocks, group equivalent blocks, choose and stitch a network."""

from zooforge.reassembly.blocks import Block, BlockInfo, cut
from zooforge.reassembly.compose import ComposeConfig, ComposeResult, compose
from zooforge.reassembly.partition import Partition, partition
from zooforge.reassembly.plan import Plan, plan
from zooforge.reassembly.similarity import cka_matrix, linear_cka, minibatch_cka
from zooforge.reassembly.solve import Candidate, Problem, SolveResult, solve
from zooforge.reassembly.stitch import Assembly, Stitch, load_assembly, save_assembly

__all__ = ["Assembly", "Block", "BlockInfo", "Candidate", "ComposeConfig", "ComposeResult", "Partition", "Plan", "Problem",
           "SolveResult",
           "Stitch", "cka_matrix", "compose", "cut", "linear_cka", "load_assembly", "minibatch_cka", "partition",
           "plan", "save_assembly", "solve"]
