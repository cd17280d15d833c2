"""The texts the int8 accuracy guard runs an encoder on (`quantize_dynamic_int8`), kept apart from the texts
`validate` judges the result with (validate/encoder_cases.py), so the guard is not graded on what it tuned on.

Chosen to stress what per-tensor activation quantization gets wrong: very short inputs (a handful of tokens,
where a few outlier activations dominate the pooled vector), long ones (near the 128..256-token limits
sentence-transformers uses), accents, non-Latin scripts (CJK, Cyrillic, Greek, Arabic, Hebrew, Devanagari,
Thai, Korean), digits, code, URLs and emoji.
"""

from __future__ import annotations

SENTENCES: tuple[str, ...] = (
    "Hello!",
    "ok",
    "?!",
    "Yes.",
    "Thanks a lot",
    "no way",
    "Good morning.",
    "Why?",
    "lol",
    "Sure, why not.",
    "See you tomorrow!",
    "Not bad at all.",
    "It works.",
    "Help!",
    "42",
    "Merci beaucoup !",
    "Danke schön.",
    "谢谢",
    "Okay, fine.",
    "Best pizza in town",
    "Call me later",
    "I don't know.",
    "A man is playing a guitar.",
    "Two dogs are running through a snowy field.",
    "The weather is lovely today, let's go for a walk in the park.",
    "I absolutely loved this movie; the acting was superb and the ending made me cry.",
    "Worst purchase ever. The battery died after two days and support never answered.",
    "The central bank raised interest rates by 0.75 percentage points on Tuesday, the largest increase since 1994.",
    "Photosynthesis converts light energy into chemical energy stored in glucose molecules.",
    "How do I reset my password if I no longer have access to my email account?",
    "Where is the nearest train station?",
    "Café crème, naïve résumé, Zürich, São Paulo and Kraków are full of accents.",
    "Les enfants jouent dans le jardin pendant que leurs parents préparent le dîner.",
    "Der schnelle braune Fuchs springt über den faulen Hund, während die Sonne untergeht.",
    "¿Dónde está la biblioteca? Necesito devolver tres libros antes del viernes.",
    "Zażółć gęślą jaźń — to zdanie zawiera wszystkie polskie znaki diakrytyczne.",
    "Москва — столица России, а Санкт-Петербург — её культурная столица.",
    "Η Αθήνα είναι η πρωτεύουσα της Ελλάδας και μία από τις αρχαιότερες πόλεις του κόσμου.",
    "مرحبا بالعالم، كيف حالك اليوم؟",
    "שלום עולם, מה שלומך?",
    "भारत एक विशाल देश है जिसकी संस्कृति बहुत पुरानी है।",
    "กรุงเทพมหานครเป็นเมืองหลวงของประเทศไทย",
    "京都には千を超える寺があります。上海是中国最大的城市。",
    "我今天早上喝了一杯咖啡，然后去公司上班。",
    "서울은 한국의 수도이며 인구가 천만 명에 가깝습니다.",
    "Tiếng Việt có nhiều dấu thanh điệu khác nhau.",
    "def fibonacci(n): return n if n < 2 else fibonacci(n - 1) + fibonacci(n - 2)",
    "SELECT name, COUNT(*) FROM users WHERE created_at > '2024-01-01' GROUP BY name;",
    "https://example.com/search?q=onnx+runtime&page=2 #int8 @team :-)",
    "Order #A-77812 shipped on 2024-03-15 at 14:32 UTC, tracking 1Z999AA10123456784.",
    "WARNING: DISK USAGE ABOVE 95 PERCENT ON /dev/sda1",
    "I'm so happy 😀🎉 see you at 8pm!!!",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "The mitochondria is the powerhouse of the cell, and ATP synthase is its turbine.",
    "She said, \"I'll be there by noon,\" but she arrived at three o'clock.",
    ("The history of the city dates back to the Roman era, when a small settlement grew along the river. Traders "
     "from distant lands brought spices, silk and new ideas, and over the centuries the town became a center of "
     "learning with a university, a cathedral and a busy harbor. Today it is known for its museums, its old "
     "bridges and a food market that has opened every Saturday since the fourteenth century."),
    ("Machine learning models are trained on large datasets to recognize patterns. Once trained, they can be "
     "exported to portable formats such as ONNX and served on CPUs or GPUs; quantizing the weights to eight-bit "
     "integers makes them smaller and faster, but every approximation must be measured against the original, "
     "because a small error in an early layer can grow as it passes through the rest of the network. "
     "Careful engineers therefore keep a corpus of difficult inputs and compare the outputs sentence by sentence."),
    ("Il était une fois, dans un petit village au bord de la mer, un pêcheur qui partait chaque matin avant "
     "l'aube. Sa femme réparait les filets, ses enfants vendaient le poisson au marché, et le soir toute la "
     "famille se réunissait autour du feu pour écouter les histoires du grand-père."),
    ("人工知能の研究は一九五〇年代に始まり、現在では画像認識、音声認識、機械翻訳など多くの分野で実用化されています。"
     "特に深層学習の登場以降、性能は大きく向上しました。"),
)

# (question, context) pairs for question-answering heads.
QUESTION_CONTEXTS: tuple[tuple[str, str], ...] = (
    ("Where does Wolfgang live?", "My name is Wolfgang and I live in Berlin. My friend Sarah lives in Paris."),
    ("When was the bridge built?", "The old stone bridge was built in 1342 and restored after the flood of 1890."),
    ("What does ATP synthase do?", "ATP synthase is an enzyme that produces ATP from ADP and inorganic phosphate."),
    ("Qui répare les filets ?", "Sa femme réparait les filets, ses enfants vendaient le poisson au marché."),
    ("首都はどこですか？", "東京は日本の首都です。大阪は日本で二番目に大きな都市圏です。"),
    ("How much did rates rise?", "The central bank raised interest rates by 0.75 percentage points on Tuesday."),
    ("Who founded the company?", "The company was founded in 1998 by two students, Ana and Luis, in a garage."),
    ("Which city has the harbor?", "Over the centuries the town became a center of learning with a busy harbor."),
)
