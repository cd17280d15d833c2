"""Held-out English prose for teacher-forced accuracy checks of quantized artifacts (~700 tokens with a BPE
tokenizer). Written for this project, so no checkpoint was trained on it verbatim; it mixes narrative,
explanation, dialogue, numbers and a short list so that the agreement figure is not dominated by one register.
"""

HELDOUT_TEXT = """\
The kiln stood at the edge of the village, half hidden by a row of old walnut trees. Nobody remembered who had \
built it, but everyone agreed that it had been there longer than the church, and that on cold mornings the \
bricks along its eastern wall stayed warm long after the last firing had ended.

Mara learned the trade from her uncle, a patient man who measured everything twice and wrote nothing down. He \
taught her to judge the heat by the colour of the flame: a dull red meant the clay was still drying, orange meant \
the glaze had begun to melt, and a white so bright it hurt to look at meant that something had gone wrong. "The \
fire does not care what you intended," he used to say. "It only answers what you actually did."

In her first year she ruined more pots than she kept. Some cracked because she had rushed the drying; others \
came out with glaze that had run down their sides like wax from a candle. Each failure taught her something \
small and specific. She began to keep a notebook, despite her uncle's teasing, and in it she recorded the \
weather, the wood she burned, the time each stage took, and the result.

By the third year the notebook had grown into four volumes, and patterns had started to appear. Firings on damp \
days needed almost an hour more. Oak burned hotter than pine but took longer to catch. A kiln loaded too tightly \
heated unevenly, so that pots near the door were always a little paler than those at the back. None of these \
facts was surprising on its own, yet together they let her plan a firing the way a navigator plans a voyage.

Travellers sometimes stopped to watch. One autumn a merchant from the coast asked how long it took to make a \
single bowl. Mara thought about it for a moment. "Twenty minutes at the wheel," she said, "two weeks of drying, \
a day in the fire, and about ten years of learning what not to do." The merchant laughed, bought six bowls, and \
came back the following spring for thirty more.

The secret, if there was one, was attention rather than talent. A good potter notices when the clay is slightly \
too wet, when the wind changes direction, when the smoke turns from grey to almost clear. Most mistakes announce \
themselves early, but quietly, and the skill lies in hearing them before they become loud.

Years later, when Mara took on apprentices of her own, she gave each of them a blank notebook on their first \
day. She asked them to write down three things after every firing:

1. what they expected to happen,
2. what actually happened, and
3. one guess about why the two were different.

Most of the guesses turned out to be wrong. That was fine, she told them; a wrong guess that you can check is \
worth more than a right one you cannot. Over time the guesses improved, and so did the pots.

The kiln is still there today. The walnut trees have grown taller, the village has become a small town, and the \
bricks along the eastern wall are still warm on cold mornings. On a shelf inside the workshop, next to a jar of \
brushes, sit eleven worn notebooks. Anyone who asks is allowed to read them, and a surprising number of people do.
"""
