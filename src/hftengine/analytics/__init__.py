"""Pure, vectorised options analytics (numpy + scipy.special + stdlib only; no I/O).

Modules by concept:

- :mod:`~hftengine.analytics.bsm` — Black-Scholes-Merton price and Greeks on the spot;
- :mod:`~hftengine.analytics.black76` — Black-76 on the forward, parity forward;
- :mod:`~hftengine.analytics.iv` — implied volatility (+ Greeks at it, status codes);
- :mod:`~hftengine.analytics.normalized_black` — the normalised Black function and solver;
- :mod:`~hftengine.analytics.greeks` — the ``Greeks`` struct of arrays;
- :mod:`~hftengine.analytics.chain` — ``analyze_chain``, PCR, max pain;
- :mod:`~hftengine.analytics.gex`, :mod:`~hftengine.analytics.skew`,
  :mod:`~hftengine.analytics.buildup`, :mod:`~hftengine.analytics.flow`,
  :mod:`~hftengine.analytics.quality` — the chain analytics pieces;
- :mod:`~hftengine.analytics.conventions` — versioned sign/unit conventions;
- :mod:`~hftengine.analytics.expiry` — time to expiry.
"""

from hftengine.analytics.buildup import BuildUp, classify_buildup
from hftengine.analytics.chain import ChainResult, LegQuotes, analyze_chain, max_pain, mid_price, pcr
from hftengine.analytics.conventions import CONVENTIONS_VERSION, DEFAULT_CONVENTIONS, Conventions
from hftengine.analytics.expiry import time_to_expiry
from hftengine.analytics.flow import FlowFlag, flow_scores
from hftengine.analytics.gex import call_wall, gamma_flip, gex_per_strike, gex_profile, put_wall
from hftengine.analytics.greeks import Greeks
from hftengine.analytics.iv import IVResult, IVStatus, implied_volatility, implied_volatility_and_greeks
from hftengine.analytics.quality import CHAIN_FLAGS, LegQuality
from hftengine.analytics.skew import TermStructure, atm_iv, risk_reversal_butterfly, term_structure

__all__ = [
    "CHAIN_FLAGS",
    "CONVENTIONS_VERSION",
    "DEFAULT_CONVENTIONS",
    "BuildUp",
    "ChainResult",
    "Conventions",
    "FlowFlag",
    "Greeks",
    "IVResult",
    "IVStatus",
    "LegQuality",
    "LegQuotes",
    "TermStructure",
    "analyze_chain",
    "atm_iv",
    "call_wall",
    "classify_buildup",
    "flow_scores",
    "gamma_flip",
    "gex_per_strike",
    "gex_profile",
    "implied_volatility",
    "implied_volatility_and_greeks",
    "max_pain",
    "mid_price",
    "pcr",
    "put_wall",
    "risk_reversal_butterfly",
    "term_structure",
    "time_to_expiry",
]
