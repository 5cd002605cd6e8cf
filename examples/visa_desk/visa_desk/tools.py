"""Tools of the visa desk's responder: visa rules and processing times from a small table.

Every rule here is invented for the example (it has the shape of real visa rules, but do not
plan a trip by it). Each tool returns JSON text with a ``summary`` sentence and the fields the
simulator profile (``sim_profile.yaml``) reads: ``authority``, ``apply_ahead`` (a visa is
needed), ``on_arrival`` (visa-free entry) and ``error`` (a trip the table does not cover).

``TOOLS`` holds the OpenAI tool specs the responder sends; ``run_tool(name, arguments)`` runs
one call as the model asked for it and never raises: a bad call is an ``error`` the model reads.
"""

from __future__ import annotations

import json
from typing import Any

NATIONALITIES = ["American", "British", "Canadian", "Brazilian", "Indian", "Nigerian", "Mexican"]
DESTINATIONS = ["Japan", "Schengen", "United Kingdom", "United States", "Canada", "Thailand"]
VISA_TYPES = ["tourist", "business", "student"]

AUTHORITY = {"Japan": "Embassy of Japan", "Schengen": "consulate of the Schengen country you enter first",
             "United Kingdom": "UK Visas and Immigration office", "United States": "US embassy or consulate",
             "Canada": "Immigration, Refugees and Citizenship Canada office", "Thailand": "Royal Thai Embassy"}
STAY = {"Japan": "90 days", "Schengen": "90 days in any 180", "United Kingdom": "6 months", "United States": "90 days",
        "Canada": "6 months", "Thailand": "30 days"}
ON_ARRIVAL = {"Japan": "a return ticket and your hotel booking", "Schengen": "proof of funds and travel insurance",
              "United Kingdom": "proof of funds and a return ticket", "United States": "an approved ESTA",
              "Canada": "an eTA linked to your passport", "Thailand": "a return ticket and proof of funds"}
APPLY_AHEAD = {"Japan": "4 weeks", "Schengen": "6 weeks", "United Kingdom": "8 weeks", "United States": "12 weeks",
               "Canada": "10 weeks", "Thailand": "3 weeks"}
PROCESSING = {  # business days, by destination and visa type
    "Japan": {"tourist": 5, "business": 7, "student": 20},
    "Schengen": {"tourist": 15, "business": 15, "student": 30},
    "United Kingdom": {"tourist": 15, "business": 15, "student": 25},
    "United States": {"tourist": 40, "business": 40, "student": 30},
    "Canada": {"tourist": 30, "business": 30, "student": 55},
    "Thailand": {"tourist": 10, "business": 10, "student": 15},
}
VISA_FREE = {  # destination -> nationalities that enter without a visa; a nationality in neither set: unknown
    "Japan": {"American", "British", "Canadian", "Brazilian", "Mexican"},
    "Schengen": {"American", "British", "Canadian", "Brazilian", "Mexican"},
    "United Kingdom": {"American", "Canadian", "Brazilian", "Mexican"},
    "United States": {"British"},
    "Canada": {"American", "British"},
    "Thailand": {"American", "British", "Canadian", "Brazilian"},
}
VISA_NEEDED = {
    "Japan": {"Indian", "Nigerian"},
    "Schengen": {"Indian", "Nigerian"},
    "United Kingdom": {"Indian", "Nigerian"},
    "United States": {"Brazilian", "Indian", "Nigerian", "Mexican"},
    "Canada": {"Brazilian", "Indian", "Nigerian", "Mexican"},
    "Thailand": {"Indian"},
}


def _place(destination: str) -> str:
    return "the Schengen area" if destination == "Schengen" else ("the " + destination if destination.startswith("United")
                                                                  else destination)


def _pick(value: Any, options: list[str]) -> str | None:
    text = str(value or "").strip().lower()
    return next((o for o in options if o.lower() == text), None)


def visa_rules(nationality: str, destination: str) -> str:
    """Whether a traveller of one nationality needs a visa for a destination, and for how long they may stay."""
    who, where = _pick(nationality, NATIONALITIES), _pick(destination, DESTINATIONS)
    if who is None or where is None:
        return json.dumps({"error": f"I have no rules for {nationality} citizens travelling to {destination}."})
    base = {"authority": AUTHORITY[where]}
    if who in VISA_FREE[where]:
        return json.dumps({**base, "summary": f"{who} citizens can visit {_place(where)} without a visa for up to "
                                              f"{STAY[where]}", "visa_required": False, "on_arrival": ON_ARRIVAL[where]})
    if who in VISA_NEEDED[where]:
        return json.dumps({**base, "summary": f"{who} citizens need a tourist visa to visit {_place(where)}, which "
                                              f"allows stays of up to {STAY[where]}", "visa_required": True,
                           "apply_ahead": APPLY_AHEAD[where]})
    return json.dumps({"error": f"I have no rules for {who} citizens travelling to {_place(where)}."})


def processing_time(destination: str, visa_type: str) -> str:
    """How long a visa application of one type takes to process for a destination."""
    where, kind = _pick(destination, DESTINATIONS), _pick(visa_type, VISA_TYPES)
    if where is None or kind is None:
        return json.dumps({"error": f"I have no processing times for a {visa_type} visa for {destination}."})
    return json.dumps({"summary": f"A {kind} visa for {_place(where)} usually takes about {PROCESSING[where][kind]} "
                                  "business days to process", "authority": AUTHORITY[where]})


FUNCTIONS = {"visa_rules": visa_rules, "processing_time": processing_time}
TOOLS = [
    {"type": "function", "function": {
        "name": "visa_rules", "description": visa_rules.__doc__,
        "parameters": {"type": "object", "required": ["nationality", "destination"], "properties": {
            "nationality": {"type": "string", "enum": NATIONALITIES, "description": "the traveller's nationality"},
            "destination": {"type": "string", "enum": DESTINATIONS,
                            "description": "where they travel (Schengen for any Schengen-area country)"}}}}},
    {"type": "function", "function": {
        "name": "processing_time", "description": processing_time.__doc__,
        "parameters": {"type": "object", "required": ["destination", "visa_type"], "properties": {
            "destination": {"type": "string", "enum": DESTINATIONS, "description": "the country the visa is for"},
            "visa_type": {"type": "string", "enum": VISA_TYPES, "description": "the kind of visa"}}}}},
]


def run_tool(name: str, arguments: str | dict[str, Any]) -> str:
    """One tool call as the model made it; a bad call comes back as an ``error`` the model can read."""
    fn = FUNCTIONS.get(name)
    if fn is None:
        return json.dumps({"error": f"There is no tool {name}; use {', '.join(FUNCTIONS)}."})
    try:
        args = json.loads(arguments) if isinstance(arguments, str) else dict(arguments or {})
        return fn(**{k: v for k, v in args.items() if k in fn.__code__.co_varnames})
    except (TypeError, ValueError) as e:
        return json.dumps({"error": f"Bad arguments for {name}: {e}."})
