"""mixsweep's worker side: proxy training, data sampling, evaluation. Importable without Ray."""
