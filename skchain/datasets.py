"""Example data and small nets for skchain's examples, docs and benchmark.

- :func:`load_topics`: a small labelled text dataset. 160 short English
  sentences, 40 on each of four topics: ``sport``, ``cooking``, ``technology``
  and ``weather``. They were written by the skchain authors for this purpose
  (no outside source, no download), are distinct, and are kept short so that
  embedding all of them takes about a second on one CPU core.
- :class:`MLP`, :func:`make_classifier_net`, :func:`make_regressor_net` and
  :func:`train_module`: the tiny tabular nets the examples train on
  scikit-learn's bundled datasets (digits, iris, ...), as skorch nets or as
  "pretrained" plain torch modules.

Everything here is public and imported as ``from skchain.datasets import
load_topics``.
"""

import numpy as np

from ._testing import MLP, make_classifier_net, make_regressor_net, train_module

__all__ = [
    "TOPICS",
    "load_topics",
    "MLP",
    "make_classifier_net",
    "make_regressor_net",
    "train_module",
]

TOPICS = ("sport", "cooking", "technology", "weather")

_SPORT = """\
The striker scored twice in the second half to win the derby.
Our local tennis club is hosting a junior tournament this weekend.
The marathon route passes the harbour before finishing at the stadium.
She broke the national record in the 400 metres hurdles.
The goalkeeper saved a penalty in the final minute of extra time.
Ticket sales for the basketball final sold out within an hour.
The coach asked the team to focus on defence during training.
He finished the cycling stage three minutes ahead of the pack.
The referee showed a red card after a dangerous tackle.
The swimming relay team qualified fastest for tomorrow's final.
Rain delayed the cricket match, but the batsmen still reached a big total.
The rookie quarterback threw three touchdown passes in his debut.
Fans celebrated in the streets after the club won the league title.
The boxer retired after twenty years and forty professional fights.
The rugby side won the scrum battle and controlled possession.
A late equaliser kept the champions unbeaten this season.
The ski jumper landed a personal best on the big hill.
The golf leader dropped two shots on the final three holes.
She signed a two-year contract with a volleyball club in Italy.
The hockey team scored on the power play to force overtime.
Training camp opens next week for the national football squad.
The sprinter false-started and was disqualified from the final.
The midfielder was named player of the match after a tireless display.
Injuries forced the manager to field an inexperienced back four.
The rowing crew won gold by half a boat length.
The home crowd cheered as the pitcher struck out the last batter.
The climber reached the final round of the bouldering world cup.
Both teams struggled in the wind, and the match ended goalless.
The transfer fee for the young winger set a club record.
The triathlete lost time in the swim but recovered on the bike.
Our under-twelve side won the regional cup on penalties.
The tennis champion served nineteen aces in the semi-final.
The runners warmed up on the track before the relay heats.
The wrestler defended her title with a pin in the second round.
The league will introduce video replays for offside decisions.
The captain lifted the trophy after a tense shootout.
He has run a half marathon every month this year.
The snooker player made a maximum break in the opening frame.
The fencing team took bronze at the European championships.
Supporters queued for hours to buy shirts of the new signing."""

_COOKING = """\
Toast the cumin seeds in a dry pan until they smell nutty.
Let the bread dough rise in a warm place for about an hour.
Simmer the tomato sauce slowly and season it at the end.
This lemon cake stays moist because the batter uses yoghurt.
Sear the steak on high heat and rest it before slicing.
Whisk the eggs with a pinch of salt for a fluffier omelette.
Roast the carrots with honey and thyme until caramelised.
The soup tastes better the next day once the flavours settle.
Fold the egg whites gently so the mousse keeps its air.
Chop the onions finely and sweat them in butter without browning.
Marinate the chicken overnight in garlic, ginger and soy sauce.
A squeeze of lime brightens the avocado salad.
Knead the pasta dough until it feels smooth and elastic.
Blind-bake the pastry case before adding the custard filling.
Add the rice to the pan and stir until every grain is coated in oil.
Grate the parmesan over the risotto just before serving.
Steam the dumplings for twelve minutes in a bamboo basket.
The curry needs more chilli and a spoonful of tamarind.
Melt the chocolate over a bowl of barely simmering water.
Brine the pork chops for juicier meat after grilling.
Soak the chickpeas overnight before cooking the hummus.
Deglaze the pan with white wine to lift the browned bits.
Sprinkle flaky salt on the cookies as soon as they leave the oven.
The stew needs three hours in a low oven to become tender.
Blanch the green beans and plunge them into ice water.
Pickle the red onions in vinegar, sugar and a little salt.
Use cold butter to make a flaky pie crust.
Fry the garlic until golden, then add the spinach.
The pancake batter should rest for half an hour before cooking.
Grind fresh pepper over the pasta and toss with pecorino.
Poach the pears in red wine with cinnamon and star anise.
Reduce the stock until it coats the back of a spoon.
Crush the cardamom pods to release their fragrance into the rice.
Bake the bread until it sounds hollow when tapped underneath.
Slice the cucumbers thinly and salt them to draw out water.
The vinaigrette is three parts olive oil to one part vinegar.
Stuff the peppers with rice, herbs and crumbled feta.
Caramelise the sugar before adding the cream for the sauce.
Season the fish simply with salt, lemon and a little dill.
Spread the dough with pesto and bake the pizza on a hot stone."""

_TECHNOLOGY = """\
The new laptop has twice the battery life of last year's model.
Update your browser to patch the security vulnerability.
The startup released an open-source library for database migrations.
Our servers were down for an hour after a failed deployment.
The phone's camera uses machine learning to sharpen night photos.
Engineers rewrote the parser in Rust to cut memory use.
The app now syncs notes across devices in real time.
A faulty driver caused the graphics card to crash under load.
The company moved its data centre to renewable energy.
Enable two-factor authentication to protect your email account.
The chip maker announced a processor with sixteen efficiency cores.
The website slowed to a crawl when traffic spiked.
The smart thermostat learns your schedule within a week.
Developers can now deploy containers with a single command.
The operating system update fixes a bug in the wireless stack.
Cloud storage prices fell as providers competed for customers.
The robot vacuum maps each room with a laser sensor.
The team migrated the monolith to a set of small services.
Hackers stole passwords from an unencrypted backup.
The compiler now catches null pointer errors at build time.
The headset streams video games from a remote server.
Unit tests run automatically whenever someone pushes code.
The keyboard connects over Bluetooth to three devices at once.
The search engine indexes billions of pages every day.
Restart the router if the network connection keeps dropping.
The database query became fast after adding an index.
The satellite internet service launched in rural areas.
The programming language added pattern matching in its latest release.
The drone can follow a cyclist and film automatically.
The spreadsheet macro crashed when the file had empty rows.
The electric car receives software updates over the air.
Our laptop fan spins loudly during video calls.
The password manager generates long random passphrases.
The printer driver refuses to install on the new operating system.
The tablet supports a stylus with low input latency.
A memory leak made the server restart every night.
The chatbot answers customer questions about billing.
The firmware update improved the fitness tracker's heart rate sensor.
Solid state drives made the old desktop feel fast again.
The code review found a race condition in the cache layer."""

_WEATHER = """\
Heavy rain is expected across the north by Tuesday evening.
A cold front will bring frost to sheltered valleys tonight.
Temperatures could reach thirty-five degrees in the south.
Strong winds brought down trees along the coast road.
Fog will linger in the morning before the sun breaks through.
The forecast shows snow on the hills above five hundred metres.
A thunderstorm warning is in place for the afternoon.
The drought has left reservoirs at their lowest level in decades.
Humidity will make the heat feel even worse this weekend.
Showers will clear eastwards, leaving a bright but chilly evening.
The hurricane is forecast to strengthen as it crosses warm water.
Hailstones the size of marbles damaged cars in the town centre.
Expect a mild and cloudy day with light drizzle at times.
Overnight lows will fall below freezing in rural areas.
The monsoon arrived two weeks earlier than usual.
A heatwave warning has been issued for the capital.
Gusts of up to ninety kilometres per hour are possible on exposed hills.
Black ice made the roads treacherous during the morning commute.
Clear skies tonight mean a good chance of seeing the meteor shower.
Flood alerts remain in force after a week of persistent rain.
The wind will swing round to the north, bringing colder air.
Sunny spells and scattered showers are likely tomorrow.
The blizzard closed mountain passes and cut power to villages.
Sea fog may affect beaches along the western coast.
This has been the wettest spring since records began.
A ridge of high pressure will keep the weather settled all week.
Lightning struck the church tower during last night's storm.
Morning frost will give way to a crisp, sunny afternoon.
The typhoon made landfall with torrential rain and storm surge.
Temperatures will drop sharply after the sun sets.
Patchy drizzle will turn heavier later in the day.
Snow showers will spread inland on a bitter easterly wind.
The dry spell has raised the risk of wildfires in the forests.
A weak weather front brings thicker cloud by the evening.
The UV index will be very high around midday.
Freezing rain coated power lines and caused outages overnight.
It will stay breezy, with the strongest winds near the coast.
The tornado left a trail of damage across the farmland.
Cloud will thicken from the west ahead of more rain.
Autumn is starting with a run of calm, misty mornings."""

_TEXTS = dict(zip(TOPICS, (_SPORT, _COOKING, _TECHNOLOGY, _WEATHER), strict=True))


def load_topics(*, shuffle=True, random_state=0):
    """The topic sentences and their labels.

    Parameters
    ----------
    shuffle : bool, default=True
        Interleave the topics (the sentences are stored topic by topic).
    random_state : int, default=0
        Seed of the shuffle.

    Returns
    -------
    texts : list of str of length 160
    labels : ndarray of str objects, of shape (160,)
        One of :data:`TOPICS` per text.

    Examples
    --------
    >>> from skchain.datasets import load_topics
    >>> texts, labels = load_topics()
    >>> len(texts), sorted(set(labels))
    (160, ['cooking', 'sport', 'technology', 'weather'])
    """
    texts, labels = [], []
    for topic, block in _TEXTS.items():
        lines = block.splitlines()
        texts.extend(lines)
        labels.extend([topic] * len(lines))
    labels = np.asarray(labels, dtype=object)
    if shuffle:
        order = np.random.RandomState(random_state).permutation(len(texts))
        texts = [texts[i] for i in order]
        labels = labels[order]
    return texts, labels
